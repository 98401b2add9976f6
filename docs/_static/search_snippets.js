/* Search results: each snippet is taken from the page's article, not from the theme's buttons and
   table of contents above it (Sphinx's searchtools reads the whole [role=main] element, which in
   this theme starts with ".ipynb .pdf System Settings Light Dark ... Contents ..."). Loaded with
   `defer`: it runs after searchtools.js and before the search starts. */
if (typeof Search !== "undefined" && Search.htmlToText) {
  const wholeMain = Search.htmlToText;
  Search.htmlToText = (htmlString, anchor) => {
    const page = new DOMParser().parseFromString(htmlString, "text/html");
    const article = page.querySelector("article.bd-article");
    if (!article) return wholeMain(htmlString, anchor);
    article.querySelectorAll(".headerlink, script, style").forEach((el) => el.remove());
    if (anchor) {
      const section = article.querySelector(anchor);
      if (section) return section.textContent;
    }
    return article.textContent;
  };
}
