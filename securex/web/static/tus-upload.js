/* securex — resumable uploads (tus 1.0) for forms that send large files.
 *
 * Progressive enhancement: without this script (or in a browser that lacks what it
 * needs), the form sends its files in its multipart body, up to the form's limit. With
 * it, a form marked `data-tus-endpoint` sends each chosen file to that endpoint on
 * submit, in PATCH requests of `data-tus-chunk` bytes, showing one progress bar per
 * file; then the form is sent with one hidden `uploads` input per finished upload (the
 * last segment of its URL) and the file input disabled, so no file is in its body.
 *
 * Resuming: the URL of an upload is kept in localStorage under the endpoint and the
 * file's name, size and last modification, so that choosing the same file again after
 * a reload resumes it. After a network error the script asks the server where the
 * upload stands (HEAD) and continues from there, waiting longer after each failure.
 * Every request carries the page's CSRF token (X-CSRFToken).
 */
(function () {
  "use strict";

  var TUS_VERSION = "1.0.0";
  var PREFIX = "securex-tus:";
  // How long the server keeps unfinished uploads (`exchange.upload_hours`, which the
  // form gives in data-tus-keep-hours): a remembered upload older than that is gone.
  var KEEP_MS = 24 * 3600 * 1000;
  var DELAYS = [1, 2, 4, 8, 15, 30, 30, 30, 60, 60]; // seconds before each new try

  function supported() {
    try {
      return Boolean(
        window.XMLHttpRequest && window.Promise && window.TextEncoder &&
        window.Blob && Blob.prototype.slice && window.localStorage
      );
    } catch (e) {
      return false; // reading localStorage throws when storage is blocked
    }
  }

  // --- remembered uploads ---------------------------------------------------------------

  function storage() {
    try { return window.localStorage; } catch (e) { return null; }
  }

  function keyOf(endpoint, file) {
    return PREFIX + endpoint + "|" + file.name + "|" + file.size + "|" + file.lastModified;
  }

  function recall(key) {
    var store = storage();
    if (!store) { return null; }
    try {
      var entry = JSON.parse(store.getItem(key) || "null");
      if (entry && entry.url && Date.now() - entry.at < KEEP_MS) { return entry.url; }
    } catch (e) { /* a damaged entry is dropped below */ }
    forget(key);
    return null;
  }

  function remember(key, url) {
    var store = storage();
    if (!store) { return; }
    try { store.setItem(key, JSON.stringify({ url: url, at: Date.now() })); } catch (e) { /* full */ }
  }

  function forget(key) {
    var store = storage();
    if (store) { try { store.removeItem(key); } catch (e) { /* nothing to do */ } }
  }

  function sweep() {
    var store = storage();
    if (!store) { return; }
    var old = [];
    for (var i = 0; i < store.length; i += 1) {
      var key = store.key(i);
      if (key && key.indexOf(PREFIX) === 0 && recallAge(store, key) > KEEP_MS) { old.push(key); }
    }
    old.forEach(forget);
  }

  function recallAge(store, key) {
    try { return Date.now() - JSON.parse(store.getItem(key)).at; } catch (e) { return Infinity; }
  }

  // --- HTTP ---------------------------------------------------------------------------------

  function Failure(message, retry) {
    this.message = message;
    this.retry = retry; // a network error or a busy server: worth trying again
  }

  function base64(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) { binary += String.fromCharCode(bytes[i]); }
    return window.btoa(binary);
  }

  function send(method, url, headers, body, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url, true);
      Object.keys(headers).forEach(function (name) { xhr.setRequestHeader(name, headers[name]); });
      if (onProgress && xhr.upload) {
        xhr.upload.onprogress = function (event) { onProgress(event.loaded); };
      }
      xhr.onload = function () { resolve(xhr); };
      xhr.onerror = xhr.ontimeout = xhr.onabort = function () {
        reject(new Failure("La connexion au serveur a été interrompue.", true));
      };
      xhr.send(body === undefined ? null : body);
    });
  }

  function detail(xhr) {
    try {
      var problem = JSON.parse(xhr.responseText);
      if (problem && problem.detail) { return problem.detail; }
    } catch (e) { /* not problem+json */ }
    if (xhr.status === 400) {
      return "Le formulaire a expiré : rechargez la page, puis choisissez à nouveau les fichiers.";
    }
    if (xhr.status === 401 || xhr.status === 403) {
      return "Votre session a expiré : reconnectez-vous, puis envoyez à nouveau le pli.";
    }
    return "Le serveur a refusé le fichier (erreur " + xhr.status + ").";
  }

  function wait(seconds) {
    return new Promise(function (resolve) { window.setTimeout(resolve, seconds * 1000); });
  }

  // --- one form -----------------------------------------------------------------------------

  function Uploads(form) {
    this.form = form;
    this.endpoint = form.getAttribute("data-tus-endpoint");
    this.chunk = parseInt(form.getAttribute("data-tus-chunk"), 10) || 8 * 1024 * 1024;
    this.max = parseInt(form.getAttribute("data-tus-max"), 10) || Infinity;
    this.maxLabel = form.getAttribute("data-tus-max-label") || "";
    this.input = form.querySelector("input[type=file]");
    this.button = form.querySelector("button[type=submit], input[type=submit]");
    var token = form.querySelector("input[name=csrf_token]");
    this.csrf = token ? token.value : "";
    this.box = document.getElementById("upload-progress");
    this.status = document.getElementById("upload-status");
    this.list = document.getElementById("upload-list");
    this.busy = false;
  }

  Uploads.prototype.headers = function (extra) {
    var headers = { "Tus-Resumable": TUS_VERSION, "X-CSRFToken": this.csrf };
    Object.keys(extra || {}).forEach(function (name) { headers[name] = extra[name]; });
    return headers;
  };

  Uploads.prototype.say = function (text) {
    if (this.status) { this.status.textContent = text; }
  };

  Uploads.prototype.alert = function (text) {
    var old = this.form.querySelector(".upload-error");
    if (old) { old.parentNode.removeChild(old); }
    if (!text) { return; }
    var box = document.createElement("div");
    box.className = "notice notice-error upload-error";
    box.setAttribute("role", "alert");
    var p = document.createElement("p");
    p.textContent = text;
    box.appendChild(p);
    (this.box || this.form).insertAdjacentElement("beforebegin", box);
  };

  Uploads.prototype.row = function (file) {
    var item = document.createElement("li");
    var label = document.createElement("span");
    label.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Envoi de " + file.name);
    var percent = document.createElement("span");
    percent.className = "percent";
    percent.textContent = "0 %";
    item.appendChild(label);
    item.appendChild(bar);
    item.appendChild(percent);
    if (this.list) { this.list.appendChild(item); }
    var self = this;
    var announced = 0;
    return {
      progress: function (sent) {
        var value = file.size ? Math.min(100, Math.floor((sent * 100) / file.size)) : 100;
        bar.value = value;
        percent.textContent = value + " %";
        // A screen reader hears every quarter, not every percent.
        if (value >= announced + 25 || value === 100) {
          announced = value - (value % 25);
          self.say("Envoi de « " + file.name + " » : " + value + " %.");
        }
      },
      failed: function () { item.className = "failed"; }
    };
  };

  Uploads.prototype.create = function (file) {
    var metadata = "filename " + base64(file.name) + ",filetype " +
      base64(file.type || "application/octet-stream");
    return send("POST", this.endpoint, this.headers({
      "Upload-Length": String(file.size),
      "Upload-Metadata": metadata
    })).then(function (xhr) {
      var location = xhr.getResponseHeader("Location");
      if (xhr.status !== 201 || !location) {
        throw new Failure(detail(xhr), xhr.status >= 500 || xhr.status === 423);
      }
      return new URL(location, window.location.href).href;
    });
  };

  // Where the server stands: its offset, or null when the upload is gone (404, 410).
  Uploads.prototype.offset = function (url) {
    return send("HEAD", url, this.headers()).then(function (xhr) {
      if (xhr.status === 200) { return parseInt(xhr.getResponseHeader("Upload-Offset"), 10) || 0; }
      if (xhr.status === 404 || xhr.status === 410 || xhr.status === 403) { return null; }
      throw new Failure(detail(xhr), xhr.status >= 500 || xhr.status === 423);
    });
  };

  Uploads.prototype.upload = async function (file, ui) {
    var key = keyOf(this.endpoint, file);
    var url = recall(key);
    var offset = null;
    var failures = 0;
    var needOffset = Boolean(url);
    for (;;) {
      try {
        if (!url) {
          url = await this.create(file);
          remember(key, url);
          offset = 0;
          needOffset = false;
        }
        if (needOffset) {
          offset = await this.offset(url);
          needOffset = false;
          if (offset === null) { forget(key); url = null; continue; } // start over
        }
        ui.progress(offset);
        var end = Math.min(offset + this.chunk, file.size);
        var start = offset;
        var xhr = await send("PATCH", url, this.headers({
          "Upload-Offset": String(offset),
          "Content-Type": "application/offset+octet-stream"
        }), file.slice(offset, end), function (loaded) { ui.progress(start + loaded); });
        var told = parseInt(xhr.getResponseHeader("Upload-Offset"), 10);
        if (xhr.status === 204) {
          offset = isNaN(told) ? end : told;
          failures = 0;
          if (offset >= file.size) { break; }
          continue;
        }
        if (xhr.status === 409 && !isNaN(told)) { // already there, or elsewhere: resume
          offset = told;
          if (offset >= file.size) { break; }
          continue;
        }
        if (xhr.status === 404 || xhr.status === 410) { forget(key); url = null; continue; }
        throw new Failure(detail(xhr), xhr.status >= 500 || xhr.status === 423);
      } catch (error) {
        if (!(error instanceof Failure) || !error.retry || failures >= DELAYS.length) {
          ui.failed();
          throw error instanceof Failure && !error.retry ? error : new Failure(
            "L'envoi de « " + file.name + " » a échoué après plusieurs essais. Vérifiez " +
            "votre connexion puis envoyez à nouveau le formulaire : il reprendra là où il " +
            "s'était arrêté.", false);
        }
        var delay = DELAYS[failures];
        failures += 1;
        this.say("Connexion interrompue pendant l'envoi de « " + file.name +
          " » : nouvel essai dans " + delay + " s.");
        await wait(delay);
        needOffset = Boolean(url);
      }
    }
    ui.progress(file.size);
    return url.split("?")[0].replace(/\/+$/, "").split("/").pop();
  };

  Uploads.prototype.hidden = function (id) {
    var present = this.form.querySelectorAll("input[type=hidden][name=uploads]");
    for (var i = 0; i < present.length; i += 1) {
      if (present[i].value === id) { return; }
    }
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = "uploads";
    input.value = id;
    this.form.appendChild(input);
  };

  Uploads.prototype.run = async function (files) {
    if (this.box) { this.box.hidden = false; }
    if (this.list) { this.list.textContent = ""; }
    var ids = [];
    for (var i = 0; i < files.length; i += 1) {
      ids.push(await this.upload(files[i], this.row(files[i])));
    }
    return ids;
  };

  Uploads.prototype.submit = function (event) {
    if (this.busy) { event.preventDefault(); return; }
    var files = Array.prototype.slice.call((this.input && this.input.files) || []);
    if (!files.length) { return; } // nothing to send first: the form goes as it is
    event.preventDefault();
    var self = this;
    var large = files.filter(function (file) { return file.size > self.max; });
    if (large.length) {
      this.alert("Fichier trop volumineux : « " + large[0].name + " » (au plus " +
        this.maxLabel + " par fichier).");
      return;
    }
    this.alert("");
    this.busy = true;
    if (this.button) { this.button.disabled = true; }
    this.run(files).then(function (ids) {
      ids.forEach(function (id) { self.hidden(id); });
      self.input.required = false;
      self.input.disabled = true; // the files are on the server: not in the body again
      self.say("Fichiers envoyés. Envoi du pli…");
      self.form.submit();
    }, function (error) {
      self.busy = false;
      if (self.button) { self.button.disabled = false; }
      self.alert(error && error.message ? error.message : "L'envoi des fichiers a échoué.");
      self.say("");
    });
  };

  function start() {
    if (!supported()) { return; }
    var forms = document.querySelectorAll("form[data-tus-endpoint]");
    var hours = forms.length ? parseInt(forms[0].getAttribute("data-tus-keep-hours"), 10) : 0;
    if (hours > 0) { KEEP_MS = hours * 3600 * 1000; }
    sweep();
    Array.prototype.forEach.call(forms, function (form) {
      var uploads = new Uploads(form);
      if (!uploads.input) { return; }
      form.addEventListener("submit", function (event) { uploads.submit(event); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
