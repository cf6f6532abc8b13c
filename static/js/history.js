// "Load older messages" for the room page: pages of the REST history
// (GET /api/rooms/<slug>/messages/, newest first) added above the messages
// shown. A plain script loaded before chat.js, which calls the factory with its
// own addMessage, so that dedupe and ordering stay in one place.
// User data only ever reaches the page through textContent.
"use strict";

window.createHistoryLoader = (() => {
  const PAGE_SIZE = 50;
  // Start the next page a little before the reader reaches the very top.
  const NEAR_TOP_PX = 150;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // `next` is absolute, built from the scheme and host the server saw; behind
  // a proxy those can differ from the page's (http vs https). The path and
  // query are all that name the page, and keep the request same-origin.
  function pathOf(absoluteUrl) {
    const url = new URL(absoluteUrl, location.href);
    return url.pathname + url.search;
  }

  async function errorDetail(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") return body.detail;
    } catch (error) {
      // Not JSON (a proxy's error page): the status says enough.
    }
    return `HTTP ${response.status}`;
  }

  // One page of history: {page} or {failure: text for the reader}. Never throws.
  async function requestPage(url) {
    let response;
    try {
      response = await fetch(url, {
        credentials: "same-origin", // the session cookie is the API's login
        headers: { Accept: "application/json" },
        redirect: "manual",
        cache: "no-store",
      });
    } catch (error) {
      return { failure: "Couldn't load older messages: the server is unreachable." };
    }
    // A redirect can only be to the login page.
    const expired = response.type === "opaqueredirect" || [401, 403].includes(response.status);
    if (expired) return { failure: "Your session has expired: reload the page to log in again." };
    if (!response.ok) {
      return { failure: `Couldn't load older messages (${await errorDetail(response)}).` };
    }
    const page = await response.json().catch(() => null);
    if (!page || !Array.isArray(page.results)) {
      return { failure: "Couldn't load older messages (unexpected answer)." };
    }
    return { page };
  }

  /**
   * options:
   *   room       the room's slug
   *   scroller   the element that scrolls the messages
   *   list       the message list: its first item anchors the scroll position
   *   container  where the button and the states show (above the list)
   *   oldestId() the lowest message id shown
   *   addMessage(message) shows a stored message unless it is already shown
   * Returns {start, loadOlder}. Call start() once, and only if the page
   * showed messages (an empty room has nothing older).
   */
  return function createHistoryLoader(options) {
    const { room, scroller, list, container, oldestId, addMessage } = options;
    const state = {
      phase: "idle", // idle | loading | error | done
      failure: "", // the text shown in the "error" phase
      next: null, // the path of the following (older) page, once one was fetched
      fetchedOnce: false,
      focusWanted: false, // the pressed button had the focus when it went
    };

    function firstPageUrl() {
      const query = new URLSearchParams({ before: oldestId(), page_size: PAGE_SIZE });
      return `/api/rooms/${encodeURIComponent(room)}/messages/?${query}`;
    }

    // Runs `change`, which adds or resizes things above the reader's view, and
    // then scrolls by as much as the first message moved, so that what the
    // reader was looking at stays put. (Messages added below, live ones, do
    // not move it.)
    function keepingScrollPosition(change) {
      const anchor = list.firstElementChild;
      const before = anchor ? anchor.getBoundingClientRect().top : 0;
      change();
      if (anchor) scroller.scrollTop += anchor.getBoundingClientRect().top - before;
    }

    function button(text) {
      const node = element("button", "button older-button", text);
      node.type = "button";
      node.addEventListener("click", loadOlder);
      return node;
    }

    function contentFor(phase) {
      switch (phase) {
        case "loading":
          return [element("span", "older-text", "Loading…")];
        case "error":
          return [element("span", "older-text error-text", state.failure), button("Retry")];
        case "done":
          return [element("span", "older-text", "Beginning of the conversation")];
        default:
          return [button("Load older messages")];
      }
    }

    // The button is replaced (by "Loading…", then by the next button): a
    // keyboard user who pressed it should land on the next one, unless they
    // have moved on meanwhile.
    function restoreFocus() {
      const active = document.activeElement;
      const lost = !active || active === document.body || container.contains(active);
      const nextButton = container.querySelector("button");
      if (state.focusWanted && lost && nextButton) nextButton.focus({ preventScroll: true });
      if (nextButton || !lost) state.focusWanted = false;
    }

    function isInView(node) {
      return node.getBoundingClientRect().bottom > scroller.getBoundingClientRect().top;
    }

    function setPhase(phase, failure = "") {
      if (container.contains(document.activeElement)) state.focusWanted = true;
      state.phase = phase;
      state.failure = failure;
      const render = () => container.replaceChildren(...contentFor(phase));
      // In view, the reader is looking at it: an error that wraps onto more
      // lines must grow into view, not up out of it. Out of view, it must not
      // move what they read.
      if (isInView(container)) render();
      else keepingScrollPosition(render);
      restoreFocus();
    }

    function showPage(page) {
      // Ids from a foreign or broken answer must not reach the dedupe set.
      const messages = page.results.filter((message) => Number.isInteger(message && message.id));
      // The end: no next page, or a first page that was not full.
      const atStart = page.next == null || (!state.fetchedOnce && messages.length < PAGE_SIZE);
      state.fetchedOnce = true;
      state.next = atStart ? null : pathOf(page.next);
      keepingScrollPosition(() => {
        for (const message of messages) addMessage(message);
        setPhase(atStart ? "done" : "idle");
      });
    }

    async function loadOlder() {
      // One request at a time; after a failure, only Retry asks again.
      if (state.phase === "loading" || state.phase === "done") return;
      setPhase("loading");
      const outcome = await requestPage(state.next ?? firstPageUrl());
      if (outcome.failure) {
        setPhase("error", outcome.failure);
        return;
      }
      try {
        showPage(outcome.page);
      } catch (error) {
        console.error("chat: could not show older messages", error);
        setPhase("error", "Couldn't show older messages.");
        return;
      }
      // A short page may leave the top still in view: go on.
      loadIfNearTop();
    }

    function loadIfNearTop() {
      if (state.phase === "idle" && scroller.scrollTop < NEAR_TOP_PX) loadOlder();
    }

    function start() {
      container.hidden = false;
      setPhase("idle");
      scroller.addEventListener("scroll", loadIfNearTop, { passive: true });
      // Messages that do not fill the view leave the top in view already.
      loadIfNearTop();
    }

    return { start, loadOlder };
  };
})();
