// Hash routing: #/<page>/<part>/<part>?<params>, so every page and drill-down state is linkable.

let handler = () => {};

export function onRoute(fn) {
  handler = fn;
}

/** {page, parts, params} of a hash such as "#/grid/GZ-HZ" or "#/resources?type=central_ac&page=2". */
export function parseHash(hash = window.location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const search = cut < 0 ? "" : raw.slice(cut + 1);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { page: parts[0] || "overview", parts: parts.slice(1), params: Object.fromEntries(new URLSearchParams(search)) };
}

export function hrefFor(page, parts = [], params = {}) {
  const path = [page, ...parts].map((p) => encodeURIComponent(p)).join("/");
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") search.set(k, String(v));
  }
  const s = search.toString();
  return `#/${path}${s ? `?${s}` : ""}`;
}

/** Go to a page. replace=true rewrites the current history entry (filters being typed, paging). */
export function navigate(page, parts = [], params = {}, { replace = false } = {}) {
  const href = hrefFor(page, parts, params);
  if (replace) {
    window.history.replaceState(null, "", href);
    handler();
  } else if (window.location.hash === href) {
    handler();
  } else {
    window.location.hash = href;
  }
}
