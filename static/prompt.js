// The prompt form, made quicker to iterate with (templates/jobs/_prompt_form.html works
// without this file):
//  - Ctrl+Enter (Cmd+Enter on a Mac) in the prompt sends the form, as the Generate button does
//  - after Generate, or a refused submit, the new form's prompt gets the focus back, the caret
//    at the end of the kept text, so the next try is typed at once
(function () {
  "use strict";

  function promptField() {
    var form = document.getElementById("prompt-form");
    return form ? form.querySelector("textarea[name=prompt]") : null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.altKey) return;
    var field = event.target;
    if (!field || field.name !== "prompt" || !field.form || field.form.id !== "prompt-form") return;
    event.preventDefault();
    if (typeof field.form.requestSubmit === "function") {
      field.form.requestSubmit();
    } else {
      field.form.querySelector("button[type=submit]").click();
    }
  });

  // Set when the form is sent, so only a form that replaces a sent one takes the focus (not
  // one swapped in for another reason, such as a provider's options).
  var sent = false;
  document.addEventListener("submit", function (event) {
    if (event.target && event.target.id === "prompt-form") sent = true;
  }, true);

  function refocus() {
    if (!sent) return;
    var field = promptField();
    if (!field || !field.isConnected) return;
    sent = false;
    field.focus();
    var end = field.value.length;
    field.setSelectionRange(end, end);
  }

  // The fresh form arrives out of band with the new card (201) or in place of the old one
  // (422); either way it is settled when htmx has finished the request.
  document.addEventListener("htmx:afterSettle", refocus);
  document.addEventListener("htmx:oobAfterSwap", function () {
    window.setTimeout(refocus, 0);
  });
})();
