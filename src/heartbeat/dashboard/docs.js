// The API reference page: Swagger UI over /openapi.json. A token the dashboard holds (this tab's
// session storage) is sent with the page's own requests, so the document loads when the server needs one.
"use strict";

window.addEventListener("load", () => {
  const token = sessionStorage.getItem("heartbeat-token");
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: (request) => {
      const sameOrigin = new URL(request.url, location.href).origin === location.origin;
      if (token && sameOrigin && !request.headers.Authorization) request.headers.Authorization = `Bearer ${token}`;
      return request;
    },
  });
});
