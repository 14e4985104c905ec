"""Regenerate docs/img/jaeger-*.png: probe traces in Jaeger v2, shot with headless Chromium.

    .venv/bin/python docs/img/jaeger_screenshots.py            # needs `make otel` and Debian's chromium

It starts the pinned Jaeger v2 and Collector (collector-jaeger-sidecar.yaml) on loopback ports,
two probers (vantages eu-1 and us-1) probing a loopback HTTPS service, a 503 endpoint and a closed
port, then shoots:
- jaeger-probe-trace.png: the waterfall of one HTTPS probe trace,
- jaeger-failed-probe.png: the waterfall of a failed probe (HTTP 503),
- jaeger-search.png: the search by tag (`probe.target`, `error.type`).

Jaeger's UI is a separate JavaScript build (jaeger-ui) that the Go module does not contain: a
binary built from the module proxy serves a placeholder page. With JAEGER_UI_ASSETS=<a jaeger-ui
build directory> Jaeger serves that UI (`jaeger_query.ui.assets_path`) and the real UI is shot.
Without it, the pages shot are drawn by this script from Jaeger's api_v3 answers (the same spans,
laid out as Jaeger's trace view lays them out), and say so in their header.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository, for tests.support

from tests.support.e2e_stack import (  # noqa: E402
    CONFIG_DIR,
    QUIET_SDK,
    Jaeger,
    Trace,
    endpoint,
    free_port,
    jaeger_config,
    locate_binaries,
    prober_config,
    spawn,
    start_collector,
    start_prober,
    traces_of_target,
    wait_for,
    wait_ready,
)
from tests.support.e2e_targets import loopback_targets  # noqa: E402

SERVICE = "otelprobe"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no chromium: apt-get install -y chromium")


def shoot(url: str, out: Path, size: str = "1400,820") -> None:
    with tempfile.TemporaryDirectory(prefix="otelprobe-chromium-") as profile:
        subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
    print(f"wrote {out}")


# --- a trace view drawn from api_v3, for a Jaeger without UI assets ---------------------------
_STYLE = """
body{font:13px/1.4 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222}
header{background:#199;color:#fff;padding:8px 16px;font-size:15px}
header small{opacity:.8;margin-left:12px}
.meta{padding:8px 16px;border-bottom:1px solid #ddd;background:#fafafa}
.meta b{margin-right:16px}
table{border-collapse:collapse;width:100%}
td{padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}
td.name{width:30%;white-space:nowrap}
.bar{position:relative;height:14px;background:#f3f3f3}
.bar span{position:absolute;top:0;height:14px;border-radius:2px;background:#17a2b8}
.bar span.err{background:#d9534f}
.dur{font-size:11px;color:#555;margin-left:6px}
.tags{font-size:11px;color:#444;padding:2px 8px 6px 24px;word-break:break-all}
.tags code{background:#eef;border-radius:3px;padding:0 3px;margin-right:4px}
.errbadge{color:#fff;background:#d9534f;border-radius:3px;padding:0 4px;font-size:11px;margin-left:4px}
.note{font-size:11px;color:#666;padding:6px 16px}
"""
_SHOWN = (
    "probe.target",
    "probe.kind",
    "probe.success",
    "error.type",
    "probe.error.detail",
    "otelprobe.vantage",
    "http.response.status_code",
    "url.full",
    "server.address",
    "network.peer.address",
    "tls.protocol.version",
    "tls.cipher",
    "dns.question.name",
)


def trace_page(trace: Trace, version: str) -> str:
    root = trace.root
    total = max(1, root.end_ns - root.start_ns)
    order = [root, *sorted((s for s in trace.spans if s is not root), key=lambda s: s.start_ns)]
    rows = []
    for span in order:
        left = 100 * (span.start_ns - root.start_ns) / total
        width = max(0.4, 100 * (span.end_ns - span.start_ns) / total)
        err = span.status_code == "ERROR"
        indent = "" if span is root else "&nbsp;&nbsp;&nbsp;&nbsp;"
        badge = '<span class="errbadge">!</span>' if err else ""
        tags = " ".join(
            f"<code>{html.escape(k)}={html.escape(json.dumps(span.attributes[k]))}</code>"
            for k in _SHOWN
            if k in span.attributes
        )
        rows.append(
            f"<tr><td class=name>{indent}{html.escape(span.name)}{badge}</td><td><div class=bar>"
            f'<span class="{"err" if err else ""}" style="left:{left:.2f}%;width:{width:.2f}%"></span></div>'
            f"<span class=dur>{(span.end_ns - span.start_ns) / 1e6:.2f} ms</span></td></tr>"
            f"<tr><td colspan=2 class=tags>{tags}</td></tr>"
        )
    return (
        f"<!doctype html><meta charset=utf-8><style>{_STYLE}</style>"
        f"<header>{html.escape(SERVICE)}: {html.escape(root.name)} "
        f"<small>trace {trace.trace_id}</small></header>"
        f"<div class=meta><b>Duration {(root.end_ns - root.start_ns) / 1e6:.2f} ms</b>"
        f"<b>Services 1</b><b>Depth 2</b><b>Total spans {len(trace.spans)}</b>"
        f"<b>vantage {html.escape(str(root.resource.get('otelprobe.vantage')))}</b></div>"
        f"<table>{''.join(rows)}</table>"
        f"<div class=note>Drawn by docs/img/jaeger_screenshots.py from Jaeger {html.escape(version)}'s "
        f"api_v3 (/api/v3/traces/{trace.trace_id}); the Jaeger UI assets are not part of the Go module.</div>"
    )


def search_page(results: dict[str, list[dict[str, Any]]], version: str) -> str:
    blocks = []
    for query, traces in results.items():
        items = []
        for t in traces[:6]:
            root = next(s for s in t["spans"] if not s.get("references"))
            tags = {tag["key"]: tag["value"] for tag in root["tags"]}
            err = tags.get("error.type")
            badge = f'<span class="errbadge">{html.escape(str(err))}</span>' if err else ""
            target, vantage = (
                html.escape(str(tags.get("probe.target"))),
                html.escape(str(tags.get("otelprobe.vantage"))),
            )
            items.append(
                f"<tr><td class=name>{html.escape(root['operationName'])}{badge}</td>"
                f"<td>{target} · {vantage} · {root['duration'] / 1000:.2f} ms · {len(t['spans'])} spans"
                f" · {t['traceID'][:16]}</td></tr>"
            )
        heading = f"<div class=meta><b>Tags: {html.escape(query)}</b> {len(traces)} traces</div>"
        blocks.append(f"{heading}<table>{''.join(items)}</table>")
    return (
        f"<!doctype html><meta charset=utf-8><style>{_STYLE}</style>"
        f"<header>Search: service {SERVICE}</header>"
        + "".join(blocks)
        + f"<div class=note>Drawn from Jaeger {html.escape(version)}'s search API"
        " (/api/traces?service=..&amp;tags=..), what the UI's Tags box sends.</div>"
    )


async def main() -> None:
    binaries = locate_binaries()
    tmp = Path(tempfile.mkdtemp(prefix="otelprobe-screenshots-"))
    otlp, otlp_http, query, query_grpc = endpoint(), endpoint(), endpoint(), endpoint()
    config = jaeger_config(otlp, otlp_http, query, query_grpc)
    assets = os.environ.get("JAEGER_UI_ASSETS")
    if assets:
        config["extensions"]["jaeger_query"]["ui"] = {"assets_path": assets}
    (tmp / "jaeger.yaml").write_text(yaml.safe_dump(config))
    proc = await spawn(
        "jaeger", [str(binaries.jaeger), f"--config={tmp / 'jaeger.yaml'}"], tmp / "jaeger.log", env=QUIET_SDK
    )
    await wait_ready(proc, 90)
    jaeger = Jaeger(proc, otlp, f"http://{otlp_http}", f"http://{query}")
    collector_grpc = endpoint()
    overlay = {
        "extensions": {"health_check": {"endpoint": endpoint()}},
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": collector_grpc}, "http": {"endpoint": endpoint()}}}
        },
        "exporters": {
            "otlp/jaeger": {"endpoint": otlp},
            "otlp/sidecar": {"endpoint": f"127.0.0.1:{free_port()}"},
            "prometheus": {"endpoint": endpoint()},
        },
    }
    collector = await start_collector(
        binaries, tmp, "collector", CONFIG_DIR / "collector-jaeger-sidecar.yaml", overlay
    )
    probers = []
    try:
        async with loopback_targets(tmp, trustme.CA()) as targets:
            chosen = [
                t
                for t in targets.target_list("shop")
                if t["name"] in {"shop-https", "shop-http503", "shop-refused"}
            ]
            for vantage in ("eu-1", "us-1"):
                cfg = prober_config(collector_grpc, chosen, vantage=vantage, service=SERVICE, interval="2s")
                probers.append(await start_prober(tmp, f"prober-{vantage}", cfg))

            async def enough() -> list[Trace] | None:
                found = await jaeger.find_traces(SERVICE)
                names = ("shop-https", "shop-http503", "shop-refused")
                return found if all(len(traces_of_target(found, n)) >= 4 for n in names) else None

            found = await wait_for(enough, 90, "probe traces", 1.0)
        for prober in probers:
            await prober.stop()
        async with aiohttp.ClientSession() as session, session.get(jaeger.query + "/") as response:
            real_ui = "not the Jaeger UI you are looking for" not in await response.text()
        ok = traces_of_target(found, "shop-https")[0]
        failed = traces_of_target(found, "shop-http503")[0]
        version = "v1.75.0"
        if real_ui:
            shoot(f"{jaeger.query}/trace/{ok.trace_id}", HERE / "jaeger-probe-trace.png")
            shoot(f"{jaeger.query}/trace/{failed.trace_id}", HERE / "jaeger-failed-probe.png")
            tags = json.dumps({"error.type": "http_status"})
            shoot(f"{jaeger.query}/search?service={SERVICE}&tags={tags}", HERE / "jaeger-search.png")
        else:
            pages = {
                "jaeger-probe-trace": trace_page(ok, version),
                "jaeger-failed-probe": trace_page(failed, version),
            }
            searches = {
                'probe.target="shop-https"': await jaeger.search_tags(
                    SERVICE, {"probe.target": "shop-https"}
                ),
                'error.type="http_status"': await jaeger.search_tags(SERVICE, {"error.type": "http_status"}),
                'probe.target="shop-refused" otelprobe.vantage="us-1"': await jaeger.search_tags(
                    SERVICE, {"probe.target": "shop-refused", "otelprobe.vantage": "us-1"}
                ),
            }
            pages["jaeger-search"] = search_page(searches, version)
            for name, page in pages.items():
                path = tmp / f"{name}.html"
                path.write_text(page)
                shoot(path.as_uri(), HERE / f"{name}.png", size="1200,640")
    finally:
        for prober in probers:
            await prober.stop()
        await collector.stop()
        await jaeger.stop()


if __name__ == "__main__":
    asyncio.run(main())
