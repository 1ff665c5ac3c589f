"""The closer: Apache-compatible download mirror chooser at /dyn/closer/<path>.

Projects that linked their download pages through Apache's ``closer.cgi`` / ``closer.lua`` point at
``/dyn/closer.cgi/<path>`` (or ``/dyn/closer/<path>``, ``/dyn/closer.lua/<path>``) here and keep their
EZT pages unchanged. The mirror comes from the same picker and plan as the DNS answers
(dnsd.picker): health, freshness, score, nearest tier, backups last. Unlike the original (same
country, else a random backup) a country without a healthy mirror gets its region's, and weights
count.

Hot paths (``action=download``, ``as_json``, ``preferred=true``) answer synchronously from memory:
the plan, and for "is it in the dist tree" an index of the tree that a TimerService rebuilds on a
worker thread (`DistIndex`, started by admin.makeService through `refresher`). No database, no
file. The optional HEAD check of ``action=download`` runs through Twisted's client behind the
probes' guard against private addresses (dnsd.outbound), cached per mirror and file, and never
blocks the reactor. HTML pages need their template: it is found, stat'ed and
parsed on a worker thread and then served from memory for a few seconds (`TemplateStore`), so
the reactor thread does no file I/O after start-up.

Templates are EZT, rendered with the ``ezt`` package. A page is found the original way:
``<name>.cgi`` requested in a folder is rendered from ``<name>.html`` (or ``.ezt``, or ``.md``, which
is turned into HTML first, as the ASF site build did) beside it in ``[closer] document_root``, else
the built-in default. Values are HTML-escaped here and the template is rendered raw, so the one
value that is HTML (``[lookup]``) can carry a link. Square brackets that are not EZT directives
(``[HashAlgorithm]`` in a code sample) are kept as text instead of failing the page.

The package, one job per module: `params` (the query parameters and the file path), `dist` (the
index of the distribution tree), `templates` (finding, compiling and rendering EZT pages, every
file inside the document root), `choice` (the preferred mirror and the lists: `Closer`),
`heads` (the HEAD checks), `resource` (the web resource and its wiring). The render helper, the
security headers and the error pages are the site's own (admin.web.framework).
"""

from admin.closer.resource import ClosePages, build, make_closer, mount, refresher

__all__ = ["ClosePages", "build", "make_closer", "mount", "refresher"]
