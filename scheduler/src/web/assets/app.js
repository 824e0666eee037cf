// Kiln web builder: line numbers and file loading in the build form, inline parser errors, the
// live build log, copy buttons. Plain JavaScript, no dependencies; pages work without it except
// for what it adds.
'use strict';

(function () {
  const byId = (id) => document.getElementById(id);

  // Copy buttons: <button data-copy="ID"> copies the value of the field ID.
  document.addEventListener('click', (event) => {
    const button = event.target.closest('[data-copy]');
    if (!button) return;
    const field = byId(button.dataset.copy);
    if (!field) return;
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    const done = () => {
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = label; }, 2000);
    };
    const fallback = () => {
      field.select();
      document.execCommand('copy');
      done();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, fallback);
    } else {
      fallback();
    }
  });

  // Base64 of the UTF-8 bytes of a string (the API's definitionRaw), in slices so that long
  // definitions do not overflow the argument list of fromCharCode.
  function base64Utf8(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function initForm(form) {
    const textarea = byId('definition');
    const gutter = byId('gutter');
    const editor = byId('editor');
    const errors = byId('definition-errors');
    const status = byId('build-status');
    const button = byId('build-button');
    const fileInput = byId('definition-file');
    let errorLines = [];
    let marks = [];

    function metrics() {
      const style = getComputedStyle(textarea);
      return { line: parseFloat(style.lineHeight), top: parseFloat(style.paddingTop) };
    }

    function placeMarks() {
      const m = metrics();
      marks.forEach((mark) => {
        const line = Number(mark.dataset.line);
        mark.style.left = gutter.offsetWidth + 'px';
        mark.style.top = (m.top + (line - 1) * m.line - textarea.scrollTop) + 'px';
      });
    }

    function render() {
      const count = textarea.value.split('\n').length;
      const parts = [];
      for (let i = 1; i <= count; i++) {
        parts.push(errorLines.includes(i) ? '<span class="error-line">' + i + '</span>' : '<span>' + i + '</span>');
      }
      gutter.innerHTML = parts.join('');
      gutter.style.height = textarea.offsetHeight + 'px';
      gutter.scrollTop = textarea.scrollTop;
      marks.forEach((mark) => mark.remove());
      marks = errorLines.filter((line) => line <= count).map((line) => {
        const mark = document.createElement('div');
        mark.className = 'line-mark';
        mark.dataset.line = String(line);
        editor.appendChild(mark);
        return mark;
      });
      placeMarks();
    }

    function clearErrors() {
      errorLines = [];
      textarea.removeAttribute('aria-invalid');
      render();
    }

    function selectLine(line) {
      const lines = textarea.value.split('\n');
      let start = 0;
      for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
      textarea.focus();
      textarea.setSelectionRange(start, start + (lines[line - 1] || '').length);
      const m = metrics();
      textarea.scrollTop = Math.max(0, (line - 3) * m.line);
    }

    function showError(message) {
      errorLines = [];
      const pattern = /^definition:(\d+):(\d+):/gm;
      let match;
      while ((match = pattern.exec(message)) !== null) {
        const line = Number(match[1]);
        if (!errorLines.includes(line)) errorLines.push(line);
      }
      errors.replaceChildren();
      const intro = document.createElement('p');
      intro.textContent = 'Nothing was queued: ' + (errorLines.length ? 'the definition has an error.' : 'the build was refused.');
      const text = document.createElement('pre');
      text.id = 'definition-error-text';
      text.textContent = message;
      errors.append(intro, text);
      errorLines.forEach((line) => {
        const jump = document.createElement('button');
        jump.type = 'button';
        jump.className = 'link';
        jump.textContent = 'Go to line ' + line;
        jump.addEventListener('click', () => selectLine(line));
        errors.append(jump, ' ');
      });
      errors.hidden = false;
      if (errorLines.length) textarea.setAttribute('aria-invalid', 'true');
      render();
    }

    textarea.addEventListener('input', () => { if (errorLines.length) clearErrors(); else render(); });
    textarea.addEventListener('scroll', () => { gutter.scrollTop = textarea.scrollTop; placeMarks(); });
    new ResizeObserver(() => { gutter.style.height = textarea.offsetHeight + 'px'; placeMarks(); }).observe(textarea);
    textarea.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });

    fileInput.addEventListener('change', () => {
      const file = fileInput.files[0];
      if (!file) return;
      if (file.size > 1024 * 1024) {
        showError('The file ' + file.name + ' is larger than 1 MiB, the largest definition accepted.');
        return;
      }
      const reader = new FileReader();
      reader.onload = () => {
        textarea.value = reader.result;
        errors.hidden = true;
        clearErrors();
        status.textContent = 'Loaded ' + file.name + '.';
        textarea.focus();
      };
      reader.onerror = () => { status.textContent = 'Could not read ' + file.name + '.'; };
      reader.readAsText(file);
      fileInput.value = '';
    });

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      button.disabled = true;
      status.textContent = 'Submitting…';
      const body = {
        definitionRaw: base64Utf8(textarea.value),
        libraryRef: byId('library-ref').value.trim(),
        builderRequirements: { arch: byId('arch').value },
      };
      try {
        const response = await fetch('/v1/build', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        });
        const answer = await response.json().catch(() => ({}));
        if (response.ok && answer.data && answer.data.id) {
          status.textContent = 'Queued; opening the build…';
          window.location.assign('/builds/' + answer.data.id);
          return;
        }
        status.textContent = '';
        showError((answer.error && answer.error.message) || ('The service answered ' + response.status + '.'));
      } catch (error) {
        status.textContent = '';
        showError('The service could not be reached: ' + error.message);
      }
      button.disabled = false;
    });

    render();
  }

  function initBuild(root) {
    const id = root.dataset.buildId;
    const log = byId('log');
    const logStatus = byId('log-status');
    const state = byId('build-state');
    const timingLabel = byId('build-timing-label');
    const timing = byId('build-timing');
    const reason = byId('build-reason');
    const cancel = byId('cancel-button');
    const result = byId('result');
    let timer = null;

    function seconds(ms) {
      const s = Math.max(0, Math.floor(ms / 1000));
      const h = Math.floor(s / 3600);
      const m = Math.floor((s % 3600) / 60);
      if (h) return h + ' h ' + m + ' min';
      if (m) return m + ' min ' + (s % 60) + ' s';
      return s + ' s';
    }

    function show(view) {
      state.textContent = view.stateLabel;
      state.className = 'state state-' + view.state;
      root.dataset.state = view.state;
      if (view.state === 'queued') {
        timingLabel.textContent = 'Queue position';
        timing.textContent = view.queuePosition ? view.queuePosition + ' ahead' : 'next';
      } else if (!view.isFinal) {
        timingLabel.textContent = 'Running for';
        timing.textContent = seconds(view.elapsedMs || 0) + (view.phase ? ' (' + view.phase + ')' : '');
      } else {
        timingLabel.textContent = 'Took';
        timing.textContent = view.elapsedMs == null ? '–' : seconds(view.elapsedMs);
      }
      cancel.hidden = view.isFinal;
      reason.hidden = !view.reason;
      reason.textContent = view.reason || '';
      if (view.downloadUrl) {
        byId('image-size').textContent = view.imageSizeLabel + ' (' + view.imageSize + ' bytes)';
        byId('image-sha256').textContent = view.imageSha256;
        byId('download-link').href = view.downloadUrl;
        byId('pull-command').value = view.pullCommand;
        result.hidden = false;
      }
    }

    async function refresh() {
      clearTimeout(timer);
      try {
        const response = await fetch('/web/api/builds/' + id);
        if (response.ok) {
          const view = await response.json();
          show(view);
          if (view.isFinal) return;
        }
      } catch (error) {
        // Try again below.
      }
      timer = setTimeout(refresh, 1000);
    }

    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(scheme + '//' + window.location.host + '/v1/build-ws/' + id);
    socket.addEventListener('open', () => { logStatus.textContent = 'Following the log…'; });
    socket.addEventListener('message', (event) => {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(document.createTextNode(event.data));
      if (atEnd) log.scrollTop = log.scrollHeight;
    });
    socket.addEventListener('close', (event) => {
      logStatus.textContent = event.code === 1000
        ? 'End of log.'
        : 'The log stream closed (' + event.code + (event.reason ? ': ' + event.reason : '') + '); reload to resume.';
      root.dataset.logClosed = String(event.code);
      refresh();
    });

    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try {
        const response = await fetch('/v1/build/' + id + '/_cancel', { method: 'PUT' });
        if (!response.ok) {
          const answer = await response.json().catch(() => ({}));
          reason.hidden = false;
          reason.textContent = (answer.error && answer.error.message) || 'Cancelling failed.';
        }
      } finally {
        cancel.disabled = false;
        refresh();
      }
    });

    refresh();
  }

  const form = byId('build-form');
  if (form) initForm(form);
  const build = byId('build');
  if (build) initBuild(build);
})();
