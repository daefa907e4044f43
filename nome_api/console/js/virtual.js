// A virtualised list: only the rows in view (and a few around them) are in the DOM, each a
// fixed height, placed by its index. A 50,000-event run is 50,000 x 28 px of scroll height
// but some sixty elements.
//
// It is a listbox: the focused list moves a selection with the arrow keys, Page Up/Down,
// Home and End (the selected row is what the details pane shows), and says which row is
// selected through aria-activedescendant.

import { h } from "./dom.js";

export const ROW_HEIGHT = 28; // the height of .vrow in console.css
const OVERSCAN = 10;

export class VirtualList {
  constructor({ label, idPrefix, renderRow, onVisible, onSelect, onUserScroll }) {
    this.idPrefix = idPrefix;
    this.renderRow = renderRow;
    this.onVisible = onVisible || (() => {});
    this.onSelect = onSelect || (() => {});
    this.onUserScroll = onUserScroll || (() => {});
    this.count = 0;
    this.selected = -1;
    this.rows = new Map();
    this.frame = 0;
    this.programmatic = false;
    this.spacer = h("div", { class: "vspacer", role: "presentation" });
    this.el = h(
      "div",
      { class: "vlist", role: "listbox", tabindex: "0", "aria-label": label },
      this.spacer,
    );
    this.el.addEventListener("scroll", () => this.scrolled(), { passive: true });
    this.el.addEventListener("keydown", (event) => this.key(event));
    this.el.addEventListener("click", (event) => {
      const row = event.target.closest(".vrow");
      if (row) this.select(Number(row.dataset.index));
    });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.el);
  }

  destroy() {
    this.resize.disconnect();
    cancelAnimationFrame(this.frame);
  }

  setCount(count) {
    if (count === this.count) return;
    this.count = count;
    this.spacer.style.height = `${count * ROW_HEIGHT}px`;
    this.schedule();
  }

  /** Render the rows again (their data arrived or changed); all visible ones by default. */
  refresh(indexes) {
    const which = indexes || [...this.rows.keys()];
    for (const index of which) {
      const row = this.rows.get(index);
      if (row) this.fill(row, index);
    }
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  scrolled() {
    if (this.programmatic) this.programmatic = false;
    else this.onUserScroll();
    this.schedule();
  }

  /** [first, last] indexes in view; [0, -1] when empty. */
  range() {
    const top = this.el.scrollTop;
    const height = this.el.clientHeight || ROW_HEIGHT * 20;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT));
    const last = Math.min(this.count - 1, Math.ceil((top + height) / ROW_HEIGHT) - 1);
    return [first, last];
  }

  render() {
    const [first, last] = this.range();
    const from = Math.max(0, first - OVERSCAN);
    const to = Math.min(this.count - 1, last + OVERSCAN);
    for (const [index, row] of this.rows) {
      if (index < from || index > to) {
        row.remove();
        this.rows.delete(index);
      }
    }
    for (let index = from; index <= to; index++) {
      let row = this.rows.get(index);
      if (!row) {
        row = h("div", {
          class: "vrow",
          role: "option",
          id: `${this.idPrefix}-${index}`,
          dataset: { index: String(index) },
        });
        row.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
        this.rows.set(index, row);
        this.fill(row, index);
        this.spacer.appendChild(row);
      } else {
        row.setAttribute("aria-setsize", String(this.count));
      }
    }
    if (this.count > 0) this.onVisible(first, last);
  }

  fill(row, index) {
    row.setAttribute("aria-posinset", String(index + 1));
    row.setAttribute("aria-setsize", String(this.count));
    row.setAttribute("aria-selected", index === this.selected ? "true" : "false");
    row.replaceChildren();
    this.renderRow(row, index);
  }

  atEnd() {
    return this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - ROW_HEIGHT;
  }

  scrollToIndex(index, align = "nearest") {
    const top = index * ROW_HEIGHT;
    const view = this.el.clientHeight;
    let target = this.el.scrollTop;
    if (align === "start") target = top;
    else if (align === "center") target = top - view / 2 + ROW_HEIGHT / 2;
    else if (top < this.el.scrollTop) target = top;
    else if (top + ROW_HEIGHT > this.el.scrollTop + view) target = top + ROW_HEIGHT - view;
    target = Math.max(0, Math.min(target, this.count * ROW_HEIGHT - view));
    if (Math.abs(target - this.el.scrollTop) >= 1) {
      this.programmatic = true;
      this.el.scrollTop = target;
    }
    this.schedule();
  }

  scrollToEnd() {
    this.programmatic = true;
    this.el.scrollTop = this.el.scrollHeight;
    this.schedule();
  }

  select(index, { scroll = true, align = "nearest" } = {}) {
    if (this.count === 0) return;
    const next = Math.max(0, Math.min(this.count - 1, index));
    const previous = this.rows.get(this.selected);
    if (previous) previous.setAttribute("aria-selected", "false");
    this.selected = next;
    this.el.setAttribute("aria-activedescendant", `${this.idPrefix}-${next}`);
    if (scroll) this.scrollToIndex(next, align);
    const row = this.rows.get(next);
    if (row) row.setAttribute("aria-selected", "true");
    this.onSelect(next);
  }

  key(event) {
    const page = Math.max(1, Math.floor(this.el.clientHeight / ROW_HEIGHT) - 1);
    // With nothing selected yet, the first key lands on the first row in view.
    const current = this.selected < 0 ? this.range()[0] : this.selected;
    const step = this.selected < 0 ? 0 : 1;
    const moves = {
      ArrowDown: current + step,
      ArrowUp: current - step,
      PageDown: current + step * page,
      PageUp: current - step * page,
      Home: 0,
      End: this.count - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      this.select(moves[event.key]);
    }
  }
}
