"""Stand-ins for WebUI modules that cannot run in CI (A1111 and Forge are not installable from a
package index, and their code must not be committed here).

Each stand-in mirrors the interface of the real module it replaces (names, signatures, the
attributes NP-LoRA reads, the behaviour NP-LoRA relies on), written from reading the upstream
sources; classes are named ``StandIn…`` and module-level aliases carry the real names where the
adapter looks them up by name (``network_module.Network``). The upstream revisions mirrored are
listed in ``/docs``-style notes at the top of each file.
"""
