// Search finds command-line options as they are typed: `py-spy --idle` finds the CPU guide.
//
// mkdocs.yml's search `separator` keeps `py-spy` and `--idle` whole in the index, but a query
// goes through lunr's query parser, which that setting does not reach: it splits a word at
// every `-`, and reads a leading `-` as "must not contain" (`--idle` is then a parse error,
// and the search box says "No matching documents"). So, before a query reaches Material's
// search worker, a dash inside a word becomes lunr's wildcard (`py*spy` matches the indexed
// `py-spy`) and an option's leading `--` is dropped (the index's trimmer drops it from
// `--idle` too). A single leading `-` keeps its meaning: leave out pages with that word.
//
// The query is Material's worker message `{type: 2, data: query}` (SearchMessageType.QUERY,
// mkdocs-material 9.x, integrations/search/worker/message). tests/test_site_browser.py types
// `py-spy --idle` into the built site's search box, so a change there fails a test.
(function () {
  "use strict";
  var QUERY = 2;

  function searchable(query) {
    return query
      .split(/(\s+)/)
      .map(function (word) {
        return word.replace(/^--(?=[^\s-])/, "").replace(/([^\s*"+-])-(?=[^\s-])/g, "$1*");
      })
      .join("");
  }

  var post = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (message) {
    var args = Array.prototype.slice.call(arguments);
    if (message && message.type === QUERY && typeof message.data === "string") {
      args[0] = Object.assign({}, message, { data: searchable(message.data) });
    }
    return post.apply(this, args);
  };
})();
