// Starts Swagger UI on /docs. Kept in a file, not inline, so the page's CSP needs no inline
// script. The online validator is off: it would send the document to an outside host.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
    validatorUrl: null,
    persistAuthorization: true,
    displayRequestDuration: true,
    showExtensions: true, // x-access: the permission or table access each operation needs
    filter: true,
    // /docs?tenant=1: the company's own document needs the token given to "Authorize"
    // (kept by persistAuthorization), also for loading the document itself
    requestInterceptor: function (request) {
      if (!request.headers.Authorization) {
        try {
          var saved = JSON.parse(window.localStorage.getItem("authorized") || "{}");
          if (saved.bearerAuth && saved.bearerAuth.value) {
            request.headers.Authorization = "Bearer " + saved.bearerAuth.value;
          }
        } catch (error) {
          // no saved token: the request goes without one (and answers 401)
        }
      }
      return request;
    },
  });
});
