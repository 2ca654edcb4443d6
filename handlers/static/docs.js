// Starts Swagger UI on /docs ("try": Authorize and Try it out) and /docs/read (every operation
// expanded, nothing sent). Kept in a file, not inline, so the page's CSP allows no inline script.
window.addEventListener("load", function () {
  var mode = document.body.dataset.mode;
  var reading = mode === "read";
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: reading ? "BaseLayout" : "StandaloneLayout",
    validatorUrl: null, // the online validator would call an outside host
    persistAuthorization: !reading,
    displayRequestDuration: true,
    docExpansion: reading ? "full" : "list",
    defaultModelsExpandDepth: reading ? 2 : 1,
    supportedSubmitMethods: reading ? [] : ["get", "put", "post", "delete", "patch"],
    filter: true,
  });
});
