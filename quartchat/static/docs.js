// Starts the vendored Swagger UI on the page at /docs (an inline script would break the CSP).
/* global SwaggerUIBundle */
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.specUrl,
  domNode: root,
  deepLinking: true,
  // Swagger UI's "validator" badge would send the spec to validator.swagger.io.
  validatorUrl: null,
});
