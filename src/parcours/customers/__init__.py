"""Customers: one profile per person, identities and merges, traits, consent, export and erasure.

Other modules use `parcours.customers.api` only.
"""
