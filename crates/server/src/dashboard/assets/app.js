// fedq dashboard: live refresh of marked sections and confirmation of destructive forms.
// Plain JavaScript, served by the server itself; the pages work without it.
"use strict";

// An element with data-live="/admin/…" is replaced by a fresh rendering of that fragment every
// few seconds, while the tab is visible.
const REFRESH_MS = 2000;
for (const el of document.querySelectorAll("[data-live]")) {
  const refresh = async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(el.dataset.live, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected || response.status === 401 || response.status === 403) {
        window.location.assign("/admin/login");
        return;
      }
      if (response.ok) {
        el.innerHTML = await response.text();
        el.dataset.refreshedAt = String(Date.now());
        el.classList.remove("stale");
      } else {
        el.classList.add("stale");
      }
    } catch (_) {
      el.classList.add("stale");
    }
  };
  setInterval(refresh, REFRESH_MS);
}

// A form with data-confirm asks before it is sent.
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
