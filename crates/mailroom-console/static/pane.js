// Inside a mail client (the manifest opens /pane?host=office): reads the open message through the
// Office JavaScript API and shows the pane for it; follows the reader when another message is
// selected in a pinned pane. Outside a mail client this file is not loaded.
/* global Office */
(function () {
  function show(item) {
    if (!item) return;
    var list = function (people) {
      return (people || []).map(function (p) { return p.emailAddress; }).join(",");
    };
    var query = new URLSearchParams({
      message_id: item.internetMessageId || "",
      from: item.from ? item.from.emailAddress : "",
      to: list(item.to),
      cc: list(item.cc),
      subject: item.subject || "",
      host: "office",
    });
    var current = new URLSearchParams(window.location.search);
    if (current.get("message_id") !== query.get("message_id") || !current.has("from")) {
      window.location.replace("/pane?" + query.toString());
    }
  }
  if (typeof Office === "undefined") return;
  Office.onReady(function () {
    var mailbox = Office.context && Office.context.mailbox;
    if (!mailbox) return;
    show(mailbox.item);
    if (mailbox.addHandlerAsync && Office.EventType && Office.EventType.ItemChanged) {
      mailbox.addHandlerAsync(Office.EventType.ItemChanged, function () { show(Office.context.mailbox.item); });
    }
  });
})();
