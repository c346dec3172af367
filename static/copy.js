// "Copy link" buttons (the share page): `button.copy-link[data-copy=ID]` copies the text of the
// element with that id. The button is hidden in the markup and shown here, so a browser without
// JavaScript shows only the text to copy by hand.
(function () {
  "use strict";

  for (const button of document.querySelectorAll("button.copy-link[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) continue;
    const status = button.parentElement.querySelector(".copy-status");
    const label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
      } catch (error) {
        // No clipboard permission (or an insecure origin): select it for a manual copy.
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (status) status.textContent = "Press Ctrl+C (or ⌘C) to copy the selected link.";
        return;
      }
      button.textContent = "Copied";
      if (status) status.textContent = "Link copied to the clipboard.";
      window.setTimeout(() => { button.textContent = label; }, 2000);
    });
  }
})();
