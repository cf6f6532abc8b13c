// The room page: one WebSocket, one room. The frames are those of
// docs/protocol.md. User data only ever reaches the page through textContent.
"use strict";

(() => {
  const CATCH_UP_PAGE_SIZE = 100; // a page this full means more may be missing
  const GAP_WAIT_MS = 1000; // a gap in a room's numbers still open after this is filled by a join
  const TYPING_REFRESH_MS = 3000; // resend "typing: true" at most this often
  const TYPING_IDLE_MS = 4000; // then "typing: false" after this long idle
  const TYPING_STALE_MS = 6000; // forget someone else's typing after this
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const MAX_REFUSED_HANDSHAKES = 3;
  const CLOSE_TOO_MANY_CONNECTIONS = 4429; // docs/protocol.md
  const NEAR_BOTTOM_PX = 80;
  const MAX_NOTICES = 50;
  const COMPOSER_MAX_HEIGHT_PX = 160;

  const dom = {
    scroller: document.getElementById("message-scroller"),
    list: document.getElementById("message-list"),
    emptyHint: document.getElementById("empty-hint"),
    status: document.getElementById("status"),
    typing: document.getElementById("typing"),
    composer: document.getElementById("composer"),
    composerFields: document.getElementById("composer-fields"),
    input: document.getElementById("composer-input"),
    banner: document.getElementById("room-banner"),
    onlineList: document.getElementById("online-list"),
    onlineCount: document.getElementById("online-count"),
    notices: document.getElementById("notices"),
    older: document.getElementById("older"),
    announcer: document.getElementById("announcer"),
  };

  const state = {
    room: readJson("room-slug"),
    me: readJson("current-user"),
    // Owner, moderator or staff: may delete anyone's message, and post while locked.
    canModerate: readJson("can-moderate"),
    roomState: readJson("room-state"), // {locked, archived}, as the page was rendered
    roomStateFrames: 0, // room_state frames received: newer than any earlier read
    removedReason: null, // set once banned or removed: the page is read-only for good
    // Ids of the messages shown, and of those deleted: frames may repeat them.
    ids: new Set(),
    minId: null, // the lowest id shown (deleted or not): older history is below it
    maxId: null, // the highest
    // The room's messages are numbered 1, 2, 3... (seq). Everything up to
    // `syncedSeq` is shown (or hidden by a moderator), and a (re)join resumes
    // after `syncedId`, the last of them. A live message beyond a gap waits in
    // `ahead` (seq -> id) until the gap fills: its predecessor's copy is late,
    // or was lost, and then a join fetches it (docs/protocol.md).
    syncedSeq: 0,
    syncedId: null,
    ahead: new Map(),
    gapTimer: null,
    joinSince: null, // the `since` of the join awaiting its answer
    // client_id -> {body, el, socket, retryTimer}: not yet echoed, in the
    // order written; `socket`: the one it was sent on.
    pending: new Map(),
    online: [],
    typers: new Map(), // username -> timeout that forgets them
    socket: null,
    joined: false, // the room is joined on the current socket
    live: false, // ...and the catch-up is complete
    joinedBefore: false, // a join succeeded since the page loaded: the next one is a rejoin
    gaveUp: false, // the server will never let us in: stop reconnecting
    attempt: 0, // reconnects since the last successful join
    refusedInARow: 0, // sockets closed before they opened
    reconnectTimer: null,
    countdownTimer: null,
    typingSentAt: 0,
    typingIdleTimer: null,
    typingOn: false,
  };

  function readJson(id) {
    return JSON.parse(document.getElementById(id).textContent);
  }

  // --- small DOM helpers -----------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pad2(number) {
    return String(number).padStart(2, "0");
  }

  // Shows `time.dateTime` as local HH:MM, with the full local date on hover.
  function localizeTime(timeEl) {
    const date = new Date(timeEl.dateTime);
    if (Number.isNaN(date.getTime())) return;
    timeEl.textContent = `${pad2(date.getHours())}:${pad2(date.getMinutes())}`;
    timeEl.title = date.toLocaleString([], { dateStyle: "full", timeStyle: "medium" });
  }

  function timeElement(iso) {
    const timeEl = element("time", "msg-time");
    timeEl.dateTime = iso;
    localizeTime(timeEl);
    return timeEl;
  }

  // --- the message list -----------------------------------------------------------

  function isNearBottom() {
    const { scrollHeight, scrollTop, clientHeight } = dom.scroller;
    return scrollHeight - scrollTop - clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    dom.scroller.scrollTop = dom.scroller.scrollHeight;
  }

  function hideEmptyHint() {
    if (dom.emptyHint) dom.emptyHint.hidden = true;
  }

  function renderMessage(message) {
    const item = element("li", "msg");
    if (message.user === state.me) item.classList.add("msg--own");
    if (message.id != null) item.dataset.id = String(message.id);
    const meta = element("div", "msg-meta");
    meta.append(element("strong", "msg-user", message.user), " ", timeElement(message.created));
    item.append(meta, element("div", "msg-body", message.body));
    addDeleteControl(item, message.user);
    return item;
  }

  // Authors may delete their own messages; the room's moderators and staff any.
  function canDelete(author) {
    return state.removedReason == null && (author === state.me || state.canModerate);
  }

  // A stored message (one with an id) that we may delete gets a "Delete" button;
  // clicks reach onListClick.
  function addDeleteControl(item, author) {
    if (!item.dataset.id || !canDelete(author)) return;
    const button = element("button", "msg-delete", "Delete");
    button.type = "button";
    const label = author === state.me ? "Delete your message" : `Delete ${author}'s message`;
    button.setAttribute("aria-label", label);
    item.querySelector(".msg-meta").append(button);
  }

  function noteShownId(id) {
    state.minId = Math.min(state.minId ?? id, id);
    state.maxId = Math.max(state.maxId ?? 0, id);
  }

  // Where a message with this id goes: before the first shown message with a
  // higher id, else before the pending sends, which stay at the bottom.
  function insertionPoint(id) {
    const shown = dom.list.querySelectorAll(".msg[data-id]");
    // Older history (history.js) goes above everything: no walk for each of its messages.
    if (shown.length > 0 && id < Number(shown[0].dataset.id)) return shown[0];
    let before = null;
    // Walk back from the newest: a new message is almost always the newest.
    for (let i = shown.length - 1; i >= 0 && Number(shown[i].dataset.id) > id; i -= 1) {
      before = shown[i];
    }
    return before || dom.list.querySelector(".msg--pending");
  }

  // Shows a stored message unless it was shown (or deleted) already; true if it was added.
  function addMessage(message) {
    if (state.ids.has(message.id)) return false;
    state.ids.add(message.id);
    noteShownId(message.id);
    dom.list.insertBefore(renderMessage(message), insertionPoint(message.id));
    hideEmptyHint();
    return true;
  }

  // The echo of our own send is its acknowledgement: the placeholder goes.
  function settlePending(message) {
    if (message.user !== state.me || message.client_id == null) return;
    const pending = state.pending.get(message.client_id);
    if (!pending) return;
    pending.el.remove();
    state.pending.delete(message.client_id);
    saveUnsent();
    sendNext();
  }

  function seedFromPage() {
    const ids = readJson("initial-messages").map((message) => message.id);
    for (const item of dom.list.querySelectorAll(".msg[data-id]")) {
      ids.push(Number(item.dataset.id));
    }
    for (const id of ids) {
      state.ids.add(id);
      noteShownId(id);
    }
    // The page holds the latest messages, with no gap: resume after them.
    // An empty page (the room had none then) resumes from the start: a join
    // without `since` would give only the latest page of what came meanwhile.
    state.syncedId = state.maxId ?? 0;
    state.syncedSeq = readJson("initial-seq");
    // The server rendered the times in UTC; show them in the reader's zone.
    dom.list.querySelectorAll("time.msg-time").forEach(localizeTime);
    for (const item of dom.list.querySelectorAll(".msg[data-id]")) {
      addDeleteControl(item, item.querySelector(".msg-user").textContent);
    }
    scrollToBottom();
  }

  // Older history is asked for from below the lowest id ever shown (deleted
  // ones included), which still holds once every message shown was deleted.
  function oldestShownId() {
    return state.minId;
  }

  function startHistoryLoader() {
    const loader = window.createHistoryLoader({
      room: state.room,
      scroller: dom.scroller,
      list: dom.list,
      container: dom.older,
      oldestId: oldestShownId,
      addMessage,
    });
    // The page held the latest messages; none means the room had none then,
    // so there is nothing older to load.
    if (state.ids.size > 0) loader.start();
    return loader;
  }

  // --- sending ----------------------------------------------------------------------

  function newClientId() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    // randomUUID needs a secure context (https or localhost).
    return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
  }

  function sendFrame(frame) {
    const socket = state.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function transmit(clientId) {
    const pending = state.pending.get(clientId);
    const frame = { type: "message", room: state.room, body: pending.body, client_id: clientId };
    if (sendFrame(frame)) pending.socket = state.socket;
  }

  // Shows the message at once, dimmed, until the server's echo replaces it.
  function sendMessage(body, clientId = newClientId()) {
    const item = renderMessage({
      id: null,
      user: state.me,
      body,
      created: new Date().toISOString(),
    });
    item.classList.add("msg--pending");
    item.append(element("div", "msg-state", "sending…"));
    dom.list.append(item);
    hideEmptyHint();
    scrollToBottom();
    state.pending.set(clientId, { body, el: item, socket: null, retryTimer: null });
    saveUnsent();
    sendNext();
  }

  // --- unsent work kept across a reload ---------------------------------------------
  //
  // The messages not yet stored, and the draft, live in the tab's
  // sessionStorage too: a reload (the user's, or ours when the session has
  // expired and the login page must come first) sends them when the room is
  // joined again, with their client_id, so that one the server had stored
  // after all is not stored twice.

  const unsentKey = `chat.unsent.${state.me}.${state.room}`;

  function saveUnsent() {
    const pending = [...state.pending].map(([clientId, { body }]) => [clientId, body]);
    const draft = dom.input.value;
    try {
      if (pending.length === 0 && draft === "") sessionStorage.removeItem(unsentKey);
      else sessionStorage.setItem(unsentKey, JSON.stringify({ pending, draft }));
    } catch (error) {
      // Storage full or disabled (private windows in some browsers): nothing kept.
    }
  }

  function restoreUnsent() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(unsentKey) || "null");
    } catch (error) {
      return;
    }
    if (!saved) return;
    for (const [clientId, body] of saved.pending || []) sendMessage(String(body), String(clientId));
    if (typeof saved.draft === "string" && dom.input.value === "") {
      dom.input.value = saved.draft;
      resizeComposer();
    }
  }

  // Our messages go out one at a time, in the order written: the next once
  // the server has stored the one before (its echo) or refused it for good.
  // Sent together, one refused for now (rate_limited) and sent again later
  // would land after those behind it. A message in flight on a socket that
  // closed is sent again on the next (the server stores a client_id once,
  // so a resend after a lost echo is safe); one on this socket is answered
  // on it, so a catch-up or gap join sends nothing again.
  function sendNext() {
    if (!state.joined || state.removedReason != null) return;
    const first = state.pending.entries().next();
    if (first.done) return;
    const [clientId, pending] = first.value;
    if (pending.socket === state.socket || pending.retryTimer != null) return;
    transmit(clientId);
  }

  // The server's retry_after (seconds) as a timer's delay: at least half a
  // second, and a second when it gave none.
  function retryDelayMs(seconds) {
    return Math.max(Number(seconds) || 1, 0.5) * 1000;
  }

  // Refused for now: sent again after the wait the server asks for, and
  // the messages written after it wait behind it.
  function sendLater(clientId, seconds) {
    const pending = state.pending.get(clientId);
    const delayMs = retryDelayMs(seconds);
    pending.socket = null;
    clearTimeout(pending.retryTimer);
    pending.retryTimer = setTimeout(() => {
      pending.retryTimer = null;
      sendNext();
    }, delayMs);
  }

  // The end of a mute, in the reader's zone: the time alone if it is today.
  function localDateTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return null;
    if (date.toDateString() === new Date().toDateString()) {
      return `${pad2(date.getHours())}:${pad2(date.getMinutes())}`;
    }
    return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  // Why a send failed, for the note under it. The server's `muted` detail
  // gives the end in UTC; the reader wants it in their own time.
  function sendFailureText(frame) {
    const until = frame.code === "muted" ? localDateTime(frame.until) : null;
    return until ? `You are muted until ${until}.` : frame.detail;
  }

  function failPending(clientId, detail) {
    const pending = state.pending.get(clientId);
    state.pending.delete(clientId);
    saveUnsent();
    clearTimeout(pending.retryTimer);
    pending.el.classList.replace("msg--pending", "msg--failed");
    const note = pending.el.querySelector(".msg-state");
    note.textContent = `Not sent: ${detail}`;
    note.classList.add("error-text");
    note.setAttribute("role", "alert");
    sendNext();
  }

  // --- typing, ours -------------------------------------------------------------------

  function onComposerInput() {
    resizeComposer();
    saveUnsent();
    if (!state.joined) return;
    if (dom.input.value.trim() === "") {
      stopTyping();
      return;
    }
    const now = Date.now();
    // Refreshed every few seconds so that the others' indicator stays up.
    if (now - state.typingSentAt >= TYPING_REFRESH_MS) {
      sendFrame({ type: "typing", room: state.room, typing: true });
      state.typingSentAt = now;
      state.typingOn = true;
    }
    clearTimeout(state.typingIdleTimer);
    state.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(state.typingIdleTimer);
    state.typingIdleTimer = null;
    if (state.typingOn) sendFrame({ type: "typing", room: state.room, typing: false });
    state.typingOn = false;
    state.typingSentAt = 0;
  }

  function resizeComposer() {
    dom.input.style.height = "auto";
    dom.input.style.height = `${Math.min(dom.input.scrollHeight, COMPOSER_MAX_HEIGHT_PX)}px`;
  }

  function onComposerSubmit(event) {
    event.preventDefault();
    // Trailing blank lines are an accident; leading indentation may be code.
    const body = dom.input.value.replace(/\s+$/, "");
    if (body.trim() === "") return;
    stopTyping();
    dom.input.value = "";
    sendMessage(body);
    resizeComposer();
    dom.input.focus();
  }

  function onComposerKeydown(event) {
    // isComposing: Enter that confirms an IME candidate must not send.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      dom.composer.requestSubmit();
    }
  }

  // --- typing, theirs ------------------------------------------------------------------

  function renderTyping() {
    const names = [...state.typers.keys()].sort();
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) {
      text = `${names[0]}, ${names[1]} and ${names.length - 2} more are typing…`;
    }
    dom.typing.textContent = text;
  }

  function forgetTyper(user) {
    if (!state.typers.has(user)) return;
    clearTimeout(state.typers.get(user));
    state.typers.delete(user);
    renderTyping();
  }

  function forgetAllTypers() {
    for (const user of [...state.typers.keys()]) forgetTyper(user);
  }

  function onTyping(frame) {
    // Our own other tabs: not news to us.
    if (frame.user === state.me) return;
    if (!frame.typing) {
      forgetTyper(frame.user);
      return;
    }
    clearTimeout(state.typers.get(frame.user));
    // A lost "false" (closed tab) must not leave the indicator up forever.
    state.typers.set(
      frame.user,
      setTimeout(() => forgetTyper(frame.user), TYPING_STALE_MS),
    );
    renderTyping();
  }

  // --- presence and notices --------------------------------------------------------------

  function setOnline(users) {
    state.online = [...new Set(users)].sort();
    const items = state.online.map((user) => {
      const item = element("li", "online-user", user);
      if (user === state.me) {
        item.classList.add("online-user--me");
        item.append(element("span", "muted", "(you)"));
      }
      return item;
    });
    dom.onlineList.replaceChildren(...items);
    dom.onlineCount.textContent = `(${state.online.length})`;
  }

  // A room's joins and leaves of the moment come in one frame, which may
  // repeat what "joined" said: only real changes are announced.
  function onPresence(frame) {
    const before = new Set(state.online);
    const users = new Set(before);
    for (const user of frame.online) users.add(user);
    for (const user of frame.offline) {
      users.delete(user);
      forgetTyper(user);
    }
    setOnline([...users]);
    const came = frame.online.filter((user) => !before.has(user));
    const went = frame.offline.filter((user) => before.has(user));
    if (came.length) addNotice(`${someUsers(came)} joined`);
    if (went.length) addNotice(`${someUsers(went)} left`);
  }

  // "alice", "alice and bob", "alice, bob, carol and 12 others".
  function someUsers(list) {
    if (list.length === 1) return list[0];
    if (list.length <= 3) return `${list.slice(0, -1).join(", ")} and ${list.at(-1)}`;
    return `${list.slice(0, 3).join(", ")} and ${list.length - 3} others`;
  }

  function addNotice(text, kind) {
    const item = element("li", "notice");
    if (kind === "error") item.classList.add("notice--error");
    item.append(timeElement(new Date().toISOString()), " ", element("span", "", text));
    dom.notices.append(item);
    while (dom.notices.children.length > MAX_NOTICES) dom.notices.firstElementChild.remove();
    dom.notices.scrollTop = dom.notices.scrollHeight;
  }

  // --- moderation: deleting, a locked or archived room, a removal -------------------------

  function onListClick(event) {
    const button = event.target.closest(".msg-delete");
    if (!button) return;
    const item = button.closest(".msg");
    requestDelete(Number(item.dataset.id), item.querySelector(".msg-user").textContent);
  }

  // The message stays until the server's message_deleted says it is gone, for
  // everyone at once; a refusal comes back as an error frame (a notice).
  function requestDelete(id, author) {
    const question =
      author === state.me
        ? "Delete your message? It disappears for everyone."
        : `Delete ${author}'s message? It disappears for everyone.`;
    if (!window.confirm(question)) return;
    // Before the (re)join completes the server would answer "not joined".
    if (!state.joined || !sendFrame({ type: "delete", room: state.room, id })) {
      addNotice("Not deleted: not connected. Try again once the status is live.", "error");
    }
  }

  // The server no longer shows the message anywhere (history leaves it out),
  // so neither do we. Its id stays in `ids`: a copy of it still on its way
  // (a catch-up page, a duplicate frame) must not bring it back.
  function onMessageDeleted(frame) {
    if (!Number.isInteger(frame.id)) return;
    state.ids.add(frame.id);
    const item = dom.list.querySelector(`.msg[data-id="${frame.id}"]`);
    if (!item) return;
    // Its Delete button may hold the focus: keep the keyboard user in the page.
    const hadFocus = item.contains(document.activeElement);
    item.remove();
    if (hadFocus && !dom.composerFields.disabled) dom.input.focus();
  }

  // Read-only for us, as the server decides it: removed; an archived room (for
  // everyone); a locked one for all but its owner and moderators (staff who
  // hold neither role included).
  function isReadOnly() {
    const { locked, archived } = state.roomState;
    return state.removedReason != null || archived || (locked && !state.canModerate);
  }

  // What the banner above the composer says; null hides it. The template
  // renders the same texts for the page's first state.
  function bannerContent() {
    if (state.removedReason != null) {
      return { kind: "removed", title: "Removed", text: `${removedText()}.` };
    }
    if (state.roomState.archived) {
      const text = "This room is archived: it is read-only.";
      return { kind: "archived", title: "Archived", text };
    }
    if (state.roomState.locked) {
      const text = state.canModerate
        ? "Members cannot post for now; as a moderator, you still can."
        : "This room is locked: only its moderators can post for now.";
      return { kind: "locked", title: "Locked", text };
    }
    return null;
  }

  function renderRoomState() {
    const content = bannerContent();
    dom.banner.hidden = content == null;
    dom.banner.className = content ? `room-banner room-banner--${content.kind}` : "room-banner";
    // Emptied when hidden too: the textarea's description points here.
    dom.banner.replaceChildren();
    if (content) {
      dom.banner.append(
        element("strong", "room-banner-title", content.title),
        " ",
        element("span", "room-banner-text", content.text),
      );
    }
    const readOnly = isReadOnly();
    if (readOnly) stopTyping();
    // The fieldset disables the textarea and the button; a draft is kept.
    dom.composerFields.disabled = readOnly;
  }

  function setRoomState(next) {
    const before = state.roomState;
    state.roomState = { locked: next.locked === true, archived: next.archived === true };
    const { locked, archived } = state.roomState;
    if (before.archived !== archived) {
      addNotice(archived ? "The room was archived" : "The room is no longer archived");
    }
    if (before.locked !== locked) {
      addNotice(locked ? "The room was locked" : "The room was unlocked");
    }
    renderRoomState();
  }

  function onRoomState(frame) {
    state.roomStateFrames += 1;
    setRoomState(frame);
  }

  // `joined` does not say whether the room is locked: a lock or an unlock
  // missed while disconnected is read from the REST API after a rejoin.
  async function refreshRoomState() {
    const framesBefore = state.roomStateFrames;
    let room;
    try {
      const response = await fetch(`/api/rooms/${encodeURIComponent(state.room)}/`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        redirect: "manual",
        cache: "no-store",
      });
      if (!response.ok) return; // the socket keeps working; the next frame corrects us
      room = await response.json();
    } catch (error) {
      return; // unreachable: the socket will notice and reconnect
    }
    // A room_state frame that came meanwhile is at least as new as this answer.
    if (state.roomStateFrames !== framesBefore || state.removedReason != null) return;
    setRoomState({ locked: room.is_locked, archived: room.is_archived });
  }

  // Why the page is read-only for good: a `removed` frame's reason ("left":
  // this account left the room from another window or a program), or the
  // code of a join refused for good.
  function removedText() {
    switch (state.removedReason) {
      case "left":
        return "You left this room from elsewhere";
      case "deleted":
        return "This room was deleted";
      case "room_not_found":
        return "This room no longer exists";
      case "forbidden":
        return "You are no longer a member of this private room";
      default:
        return `You were removed from this room (${state.removedReason})`;
    }
  }

  // Banned, removed, or a join refused for good: the server has taken every
  // socket of ours out of the room, or would refuse a rejoin, so stop here
  // and say so.
  function leaveForGood(reason) {
    if (state.removedReason != null) return;
    state.removedReason = reason || "removed";
    state.gaveUp = true;
    clearReconnect();
    for (const clientId of [...state.pending.keys()]) {
      failPending(clientId, `${removedText()}.`);
    }
    dom.list.querySelectorAll(".msg-delete").forEach((button) => button.remove());
    setOnline([]);
    forgetAllTypers();
    renderRoomState();
    addNotice(removedText(), "error");
    setStatus("offline");
    if (state.socket) state.socket.close();
  }

  // --- frames from the server --------------------------------------------------------------

  function sendJoin() {
    state.joinSince = state.syncedId;
    sendFrame({ type: "join", room: state.room, since: state.syncedId });
  }

  function onJoined(frame) {
    const nearBottom = isNearBottom();
    const page = frame.messages;
    setOnline(frame.online);
    for (const message of page) {
      settlePending(message);
      addMessage(message);
    }
    if (nearBottom) scrollToBottom();
    if (!state.joined) {
      state.joined = true;
      state.attempt = 0; // a working connection: the next drop starts the backoff over
      if (state.joinedBefore) refreshRoomState();
      state.joinedBefore = true;
    }
    if (page.length > 0) state.syncedId = Math.max(state.syncedId ?? 0, page[page.length - 1].id);
    state.syncedSeq = Math.max(state.syncedSeq, frame.seq);
    settleAhead();
    if (state.joinSince != null && page.length === CATCH_UP_PAGE_SIZE) {
      sendJoin(); // more may be missing
      return;
    }
    state.live = true;
    watchForGap();
    setStatus("live");
    sendNext();
  }

  function onLiveMessage(message) {
    const nearBottom = isNearBottom();
    settlePending(message);
    forgetTyper(message.user);
    noteLive(message);
    if (!addMessage(message)) return;
    // Read out by screen readers; history pages and our own echoes are not.
    if (message.user !== state.me) dom.announcer.textContent = `${message.user}: ${message.body}`;
    if (nearBottom || message.user === state.me) scrollToBottom();
  }

  function noteLive(message) {
    if (message.seq === state.syncedSeq + 1) {
      state.syncedSeq = message.seq;
      state.syncedId = Math.max(state.syncedId ?? 0, message.id);
      settleAhead();
    } else if (message.seq > state.syncedSeq) {
      state.ahead.set(message.seq, message.id);
      watchForGap();
    }
  }

  // Moves the synced point over the waiting numbers that now follow it.
  function settleAhead() {
    for (const seq of [...state.ahead.keys()].sort((a, b) => a - b)) {
      if (seq > state.syncedSeq + 1) break;
      if (seq === state.syncedSeq + 1) {
        state.syncedSeq = seq;
        state.syncedId = Math.max(state.syncedId ?? 0, state.ahead.get(seq));
      }
      state.ahead.delete(seq);
    }
  }

  // A gap that does not close by itself soon is filled from the database.
  function watchForGap() {
    if (state.gapTimer != null || state.ahead.size === 0) return;
    state.gapTimer = setTimeout(() => {
      state.gapTimer = null;
      if (state.ahead.size > 0 && state.live) {
        state.live = false;
        sendJoin();
      }
    }, GAP_WAIT_MS);
  }

  function onError(frame) {
    const first = state.pending.entries().next();
    if (frame.code === "frame_too_large" && !first.done && first.value[1].socket === state.socket) {
      // The server did not read the frame, so it names none (ref null); we
      // send one message at a time, so it is the one in flight.
      failPending(first.value[0], frame.detail);
      return;
    }
    if (frame.ref != null && state.pending.has(frame.ref)) {
      if (frame.code === "unavailable" || frame.code === "rate_limited") {
        // Not stored just now (the database was away, or we sent faster than
        // the room allows): sent again after the wait the server asks for.
        sendLater(frame.ref, frame.retry_after);
        return;
      }
      // Resending would fail the same way (muted, locked, too long...).
      failPending(frame.ref, sendFailureText(frame));
      return;
    }
    if (frame.ref === state.room && frame.code === "unavailable" && !state.live) {
      // A join (the first, a catch-up or a gap's) the server could not
      // answer just now: asked again after the wait, on the same socket.
      joinLater(frame.retry_after);
      return;
    }
    if (!state.joined && frame.ref === state.room) {
      onJoinRefused(frame);
      return;
    }
    // The rest, such as a refused delete (its ref is the room).
    addNotice(`Error: ${frame.detail}`, "error");
  }

  function joinLater(seconds) {
    const socket = state.socket;
    const delayMs = retryDelayMs(seconds);
    setTimeout(() => {
      if (state.socket === socket && !state.live) sendJoin();
    }, delayMs);
  }

  function onJoinRefused(frame) {
    if (["banned", "forbidden", "room_not_found"].includes(frame.code)) {
      // Banned, removed from a private room, or the room deleted while we
      // were away: reconnecting would be refused the same way.
      leaveForGood(frame.code);
      return;
    }
    addNotice(`Error: ${frame.detail}`, "error");
  }

  function onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (error) {
      console.warn("chat: ignoring a frame that is not JSON", error);
      return;
    }
    if (frame.type === "error") {
      onError(frame);
      return;
    }
    if (frame.room !== state.room) return;
    switch (frame.type) {
      case "joined":
        onJoined(frame);
        break;
      case "message":
        onLiveMessage(frame);
        break;
      case "presence":
        onPresence(frame);
        break;
      case "typing":
        onTyping(frame);
        break;
      case "message_deleted":
        onMessageDeleted(frame);
        break;
      case "room_state":
        onRoomState(frame);
        break;
      case "removed":
        leaveForGood(frame.reason);
        break;
      default:
        break; // "left", and frames newer than this script
    }
  }

  // --- the connection ---------------------------------------------------------------------------

  function setStatus(kind, text = kind) {
    dom.status.className = `status status--${kind}`;
    dom.status.textContent = text;
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/ws/chat/`;
  }

  function connect() {
    clearReconnect();
    setStatus("connecting");
    const socket = new WebSocket(socketUrl());
    let opened = false;
    state.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      state.refusedInARow = 0;
      sendJoin();
    });
    socket.addEventListener("message", (event) => onFrame(event.data));
    socket.addEventListener("close", (event) => onClose(socket, opened, event.code));
  }

  function onClose(socket, opened, code) {
    if (state.socket !== socket) return;
    state.socket = null;
    state.joined = false;
    state.live = false;
    state.typingOn = false;
    state.typingSentAt = 0;
    clearTimeout(state.typingIdleTimer);
    // Whoever was typing may be long gone by the time we are back.
    forgetAllTypers();
    if (code === CLOSE_TOO_MANY_CONNECTIONS) {
      // Every reconnect would be closed the same way while the others stay open.
      state.gaveUp = true;
      addNotice(
        "This account has too many chat pages or programs open: close one, then reload this page.",
        "error",
      );
    }
    if (state.gaveUp) {
      setStatus("offline");
      return;
    }
    if (!opened) state.refusedInARow += 1;
    if (state.refusedInARow > MAX_REFUSED_HANDSHAKES) {
      checkSessionThenReconnect();
      return;
    }
    scheduleReconnect();
  }

  // Handshakes keep being refused: most likely the session expired. Reloading
  // then leads to the login page; but if the page itself still loads (the
  // server is down, or refuses for another reason), a reload would only lose
  // the pending messages, or loop.
  async function checkSessionThenReconnect() {
    try {
      const response = await fetch(location.href, {
        method: "HEAD",
        redirect: "manual",
        cache: "no-store",
        credentials: "same-origin",
      });
      if (response.type === "opaqueredirect" || response.status === 403 || response.status === 404) {
        location.reload();
        return;
      }
    } catch (error) {
      // The server is unreachable: keep retrying with the backoff.
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearReconnect();
    if (!navigator.onLine) {
      setStatus("offline"); // the "online" event reconnects
      return;
    }
    // Full jitter: after a server restart, clients come back spread out
    // instead of all at once.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
    const delay = Math.random() * ceiling;
    state.attempt = Math.min(state.attempt + 1, 30);
    const due = Date.now() + delay;
    const showCountdown = () => {
      const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      setStatus("reconnecting", `reconnecting in ${seconds}s`);
    };
    showCountdown();
    state.countdownTimer = setInterval(showCountdown, 1000);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function clearReconnect() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    state.reconnectTimer = null;
    state.countdownTimer = null;
  }

  function onBrowserOnline() {
    // Waiting out a long backoff would be pointless now.
    if (!state.socket && !state.gaveUp) {
      state.attempt = 0;
      connect();
    }
  }

  function onBrowserOffline() {
    if (!state.socket) {
      clearReconnect();
      setStatus("offline");
    }
  }

  // --- start ---------------------------------------------------------------------------------------

  seedFromPage();
  const olderMessages = startHistoryLoader();
  restoreUnsent();
  dom.list.addEventListener("click", onListClick);
  dom.composer.addEventListener("submit", onComposerSubmit);
  dom.input.addEventListener("keydown", onComposerKeydown);
  dom.input.addEventListener("input", onComposerInput);
  window.addEventListener("online", onBrowserOnline);
  window.addEventListener("offline", onBrowserOffline);
  connect();

  // For debugging from the console only.
  window.chatApp = {
    state,
    olderMessages,
    // Drops the socket; the usual backoff brings it back.
    disconnect: () => state.socket && state.socket.close(),
  };
})();
