// Starts Swagger UI on Parcours' /api/schema/swagger page. The OpenAPI description's
// address is this script tag's data-spec-url (same origin); the validator badge, which
// would call a third party, is off.
(function () {
  "use strict";
  var script = document.currentScript;
  window.ui = SwaggerUIBundle({
    url: script.dataset.specUrl,
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
