"""Events out (docs/events.md): the event order and feed (``feed``, ``sql``), webhook
endpoints (``endpoints``), the dispatcher that fans events out and sends them
(``dispatch``), Standard Webhooks signatures (``signing``), the SSRF guard (``urls``),
low-stock alerts (``alerts``, reading ``stock``)."""
