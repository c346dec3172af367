// The image page's small enhancements: copy the prompt, keyboard shortcuts (← → f ? Esc).
// Without JavaScript the page still works: the prompt is selectable text, the neighbours are
// links and the star is a form. Loaded with `defer` from a file (no inline script, for CSP).
(function () {
  "use strict";

  const dialog = document.getElementById("shortcuts");

  // Controls that need JavaScript are rendered hidden; show them now that it runs.
  for (const control of document.querySelectorAll(".copy-button, .shortcuts-button")) {
    control.hidden = false;
  }

  function openShortcuts() {
    if (dialog && !dialog.open) {
      dialog.showModal();
    }
  }

  document.querySelector(".shortcuts-button")?.addEventListener("click", openShortcuts);

  const copyButton = document.querySelector(".copy-button");
  copyButton?.addEventListener("click", async () => {
    const source = document.getElementById(copyButton.dataset.copy);
    const status = document.querySelector(".copy-status");
    try {
      await navigator.clipboard.writeText(source.textContent);
      copyButton.textContent = "Copied";
    } catch {
      // No clipboard permission (or an insecure origin): select it for a manual copy.
      window.getSelection().selectAllChildren(source);
      if (status) status.textContent = "Press Ctrl+C (or ⌘C) to copy the selected prompt.";
      return;
    }
    if (status) status.textContent = "Prompt copied to the clipboard.";
    setTimeout(() => {
      copyButton.textContent = "Copy prompt";
      if (status) status.textContent = "";
    }, 2000);
  });

  function isTyping(target) {
    return target instanceof Element &&
      target.closest("input, textarea, select, [contenteditable]:not([contenteditable='false'])");
  }

  function follow(rel) {
    const link = document.querySelector(`.image-nav a[rel="${rel}"]`);
    if (link) {
      window.location.assign(link.href);
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (isTyping(event.target) || (dialog && dialog.open)) return;  // Esc closes the dialog natively
    switch (event.key) {
      case "ArrowLeft":
        follow("prev");
        break;
      case "ArrowRight":
        follow("next");
        break;
      case "f":
      case "F":
        // The star form posts through htmx (or reloads the page without it).
        document.getElementById("star-button")?.click();
        break;
      case "?":
        openShortcuts();
        break;
      default:
        return;
    }
    event.preventDefault();
  });
})();
