// The prompt form's reference images, made quicker (templates/jobs/_references.html works
// without this file: plain file inputs, "Remove" links):
//  - files dropped on the form or pasted from the clipboard join those of the `image` input,
//    each shown as a thumbnail with a Remove button; choosing more files adds to them
//  - "Remove" takes a gallery reference off in place instead of reloading the form
//  - after a refused submit (422) the new form gets the same files back
// Thumbnails are small data: URLs drawn from the file (the CSP allows data: images, not blob:).
(function () {
  "use strict";

  var ACCEPTED = ["image/png", "image/jpeg", "image/webp"];
  var THUMBNAIL = 160;
  // The files of the `image` input, in order. Kept here because a file input cannot add to
  // its own list, and the form may be swapped for a new one (an error, a fresh form).
  var files = [];
  var keepFilesOnSwap = false;

  function form() {
    return document.getElementById("prompt-form");
  }

  function parts() {
    var root = form();
    if (!root) return null;
    return {
      form: root,
      input: root.querySelector("input[type=file][name=image]"),
      list: root.querySelector(".reference-list"),
      status: root.querySelector(".reference-status"),
    };
  }

  function say(text) {
    var found = parts();
    if (found && found.status) found.status.textContent = text;
  }

  function syncInput(input) {
    var transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
  }

  function thumbnail(file, img) {
    if (!window.createImageBitmap) return;
    createImageBitmap(file)
      .then(function (bitmap) {
        var scale = Math.min(1, THUMBNAIL / Math.max(bitmap.width, bitmap.height));
        var canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(bitmap.width * scale));
        canvas.height = Math.max(1, Math.round(bitmap.height * scale));
        canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
        bitmap.close();
        img.src = canvas.toDataURL("image/png");
      })
      .catch(function () {
        img.replaceWith(Object.assign(document.createElement("span"), {
          className: "reference-undecodable",
          textContent: "No preview",
        }));
      });
  }

  function render() {
    var found = parts();
    if (!found || !found.list) return;
    found.list.querySelectorAll(".reference-item.is-upload").forEach(function (item) { item.remove(); });
    files.forEach(function (file, index) {
      var item = document.createElement("li");
      item.className = "reference-item is-upload";
      var img = document.createElement("img");
      img.alt = "Uploaded image " + (index + 1) + ": " + file.name;
      img.width = 80;
      img.height = 80;
      item.appendChild(img);
      var name = document.createElement("span");
      name.className = "reference-name";
      name.textContent = file.name;
      item.appendChild(name);
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button small remove-reference";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.dataset.fileIndex = String(index);
      item.appendChild(remove);
      found.list.appendChild(item);
      thumbnail(file, img);
    });
    syncInput(found.input);
  }

  function add(candidates) {
    var found = parts();
    if (!found) return 0;
    var added = 0;
    var skipped = [];
    Array.prototype.forEach.call(candidates, function (file) {
      if (ACCEPTED.indexOf(file.type) < 0) {
        skipped.push(file.name || "a file");
        return;
      }
      var duplicate = files.some(function (kept) {
        return kept.name === file.name && kept.size === file.size && kept.lastModified === file.lastModified;
      });
      if (!duplicate) {
        files.push(file);
        added += 1;
      }
    });
    render();
    var message = added ? "Added " + added + " image" + (added === 1 ? "" : "s") + "." : "";
    if (skipped.length) message += " Not an image Atelier takes (PNG, JPEG, WebP): " + skipped.join(", ") + ".";
    say(message.trim());
    return added;
  }

  function hasFiles(transfer) {
    return transfer && Array.prototype.indexOf.call(transfer.types || [], "Files") >= 0;
  }

  // The input's own picker replaces its list; what was there before stays.
  document.addEventListener("change", function (event) {
    var found = parts();
    if (!found || event.target !== found.input) return;
    var chosen = Array.prototype.slice.call(found.input.files);
    add(chosen);
  });

  document.addEventListener("click", function (event) {
    var remove = event.target.closest && event.target.closest(".remove-reference");
    var found = parts();
    if (!remove || !found || !found.form.contains(remove)) return;
    event.preventDefault();
    var item = remove.closest(".reference-item");
    var index = remove.dataset.fileIndex;
    if (index !== undefined) {
      files.splice(Number(index), 1);
      render();
    } else if (item) {
      item.remove();
    }
    say("Removed.");
    var next = found.list.querySelector(".remove-reference") || found.input;
    if (next) next.focus();
  });

  document.addEventListener("dragover", function (event) {
    var found = parts();
    if (!found || !hasFiles(event.dataTransfer) || !found.form.contains(event.target)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    found.form.classList.add("is-dropping");
  });

  document.addEventListener("dragleave", function (event) {
    var found = parts();
    if (found && (!event.relatedTarget || !found.form.contains(event.relatedTarget))) {
      found.form.classList.remove("is-dropping");
    }
  });

  document.addEventListener("drop", function (event) {
    var found = parts();
    if (!found || !hasFiles(event.dataTransfer)) return;
    found.form.classList.remove("is-dropping");
    if (!found.form.contains(event.target)) return;
    event.preventDefault();
    add(event.dataTransfer.files);
  });

  // A pasted image (a screenshot, an image copied in another tab) joins the references; pasted
  // text goes where it always goes.
  document.addEventListener("paste", function (event) {
    var found = parts();
    var data = event.clipboardData;
    if (!found || !data || !data.files || !data.files.length) return;
    if (add(data.files) > 0) event.preventDefault();
  });

  // A refused submit (422) swaps in the form again, without the files: give them back.
  // A created job swaps in a fresh form: start with none.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var found = parts();
    if (!found || event.detail.requestConfig.elt !== found.form) return;
    keepFilesOnSwap = event.detail.xhr.status === 422;
    if (!keepFilesOnSwap) files = [];
  });

  function enhance() {
    var found = parts();
    if (!found || found.form.dataset.referencesReady) return;
    found.form.dataset.referencesReady = "1";
    found.form.querySelectorAll(".drop-hint").forEach(function (hint) { hint.hidden = false; });
    if (!found.status && found.list) {
      var status = document.createElement("p");
      status.className = "reference-status";
      status.setAttribute("role", "status");
      found.list.after(status);
    }
    if (keepFilesOnSwap && files.length) {
      found.form.querySelectorAll(".files-lost").forEach(function (note) { note.hidden = true; });
    } else {
      files = [];
    }
    keepFilesOnSwap = false;
    render();
  }

  document.addEventListener("htmx:load", enhance);
  document.addEventListener("DOMContentLoaded", enhance);
})();
