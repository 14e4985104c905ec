"""`otelprobe lab ...`: record a scenario, generate a campaign, clean up leftovers, serve fault servers.

otelprobe lab run SCENARIO --out DIR        record labeled OTLP JSON (root: namespaces + links)
otelprobe lab generate --out FILE --seed N  write a balanced campaign scenario
otelprobe lab down                          remove namespaces/processes a crashed run left
otelprobe lab serve                         fault servers on loopback until Ctrl-C
otelprobe lab verify                        fault accuracy + phase timing error vs the wire (root)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from otelprobe.cli import lab_verify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)
    run = sub.add_parser("run", help="record a scenario into a labeled OTLP JSON recording")
    run.add_argument("scenario", type=Path, help="scenario file (YAML)")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument(
        "--mode",
        choices=("auto", "netns", "loopback"),
        default="auto",
        help="netns needs root (every fault); loopback: server faults only (default: auto)",
    )
    run.add_argument("--gzip", action="store_true", help="write traces.jsonl.gz")
    run.add_argument("--seed", type=int, help="override the scenario's seed")

    gen = sub.add_parser("generate", help="write a balanced campaign scenario")
    gen.add_argument("--out", type=Path, required=True, help="scenario file to write")
    gen.add_argument("--seed", type=int, required=True)
    gen.add_argument(
        "--profile",
        choices=("standard", "shifted", "wide"),
        default="standard",
        help="the lab environment (default standard; shifted: other RTTs, resolvers, servers, names;"
        " wide: a second training environment)",
    )
    gen.add_argument("--split", choices=("train", "eval"), help="default: train (shifted: eval)")
    gen.add_argument("--incidents", type=int, default=120, help="about how many incidents (default 120)")
    gen.add_argument("--name", help="scenario name (default campaign-SPLIT-SEED)")
    gen.add_argument(
        "--band-centre",
        type=float,
        metavar="U",
        help="where in each magnitude band to draw, 0..1 (default: the profile's and split's own;"
        " 0.9 puts magnitudes above the evaluation campaigns' into a training campaign)",
    )

    sub.add_parser("down", help="remove namespaces and processes left by crashed lab runs")

    serve = sub.add_parser("serve", help="run the fault servers on loopback until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")

    verify = sub.add_parser("verify", help="fault accuracy and phase timing error against a packet capture")
    lab_verify.add_arguments(verify)


def run(args: argparse.Namespace) -> int:
    command = args.lab_command
    if command == "run":
        return _run(args)
    if command == "generate":
        return _generate(args)
    if command == "down":
        return _down()
    if command == "verify":
        return lab_verify.run(args)
    return _serve(args.host)


def _run(args: argparse.Namespace) -> int:
    from otelprobe.errors import ConfigError
    from otelprobe.lab.dataset.runner import run_scenario
    from otelprobe.lab.emulation.netns import LabUnavailable
    from otelprobe.lab.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    try:
        result = run_scenario(
            scenario,
            args.out,
            mode=args.mode,
            source_text=args.scenario.read_text(encoding="utf-8") if args.seed is None else None,
            compress=args.gzip,
        )
    except LabUnavailable as exc:
        print(f"otelprobe lab: {exc}", file=sys.stderr)
        return 2
    print(
        f"recorded {result.traces} probe traces ({result.labeled_traces} during faults) and "
        f"{result.incidents} incidents in {result.duration_s:.0f} s ({result.mode} mode) "
        f"into {result.out_dir}"
    )
    if result.skipped_incidents:
        print(f"not injected in loopback mode: incidents {result.skipped_incidents}", file=sys.stderr)
    return 0


def _generate(args: argparse.Namespace) -> int:
    import yaml

    from otelprobe.lab.dataset.generator import generate_campaign
    from otelprobe.lab.dataset.profiles import Split

    if args.incidents < 1:
        print("otelprobe lab generate: --incidents must be at least 1", file=sys.stderr)
        return 2
    split: Split = args.split or ("eval" if args.profile == "shifted" else "train")
    try:
        data = generate_campaign(
            args.seed,
            split=split,
            incidents=args.incidents,
            name=args.name,
            profile=args.profile,
            band_centre=args.band_centre,
        )
    except ValueError as exc:
        print(f"otelprobe lab generate: {exc}", file=sys.stderr)
        return 2
    header = (
        f"# Generated by: otelprobe lab generate --profile {args.profile} --seed {args.seed} "
        f"--split {split} --incidents {args.incidents}"
        + (f" --band-centre {args.band_centre}" if args.band_centre is not None else "")
        + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + yaml.safe_dump(data, sort_keys=False, width=110, default_flow_style=None))
    print(f"wrote {len(data['timeline'])} incidents to {args.out}")
    return 0


def _down() -> int:
    from otelprobe.lab.emulation.netns import LabUnavailable, cleanup_all

    try:
        removed = cleanup_all()
    except LabUnavailable as exc:
        print(f"otelprobe lab: {exc}", file=sys.stderr)
        return 2
    print(f"removed {len(removed)} lab namespaces" + (": " + ", ".join(removed) if removed else ""))
    return 0


def _serve(host: str) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(host))
    return 0


async def _serve_forever(host: str) -> None:
    from otelprobe.lab.certs import LabCA
    from otelprobe.lab.emulation.topology import LAB_ZONE, write_ca
    from otelprobe.lab.servers.dns import DNSFaultServer
    from otelprobe.lab.servers.http import QUERY_KEYS, HTTPFaultServer
    from otelprobe.lab.servers.ports import BlackholePort, RefusedPort
    from otelprobe.lab.servers.tls import TLSFront

    ca = LabCA(["localhost", host, f"www.{LAB_ZONE}"])
    with tempfile.TemporaryDirectory(prefix="otelprobe-lab-") as work:
        ca_file = write_ca(ca, Path(work))
        zone = {"www": {"A": [host]}, "slow": {"A": [host]}}
        async with (
            HTTPFaultServer(host) as http,
            DNSFaultServer(host, zone=zone, origin=LAB_ZONE + ".") as dns,
            TLSFront(ca, upstream=(host, http.port), host=host) as https,
            TLSFront(ca, host=host) as tls,
        ):
            from otelprobe.lab.servers.dns_zone import DNSFault

            dns.set_fault("slow", DNSFault.delayed(0.2))
            with RefusedPort(host) as refused, BlackholePort(host) as blackhole:
                print(f"CA (for --ca):   {ca_file}")
                print(f"HTTP:            {http.url}   e.g. {http.url}?ttfb=200ms&size=64KiB&trickle=16KiB")
                print(f"HTTPS:           {https.url}  (TLS front -> the HTTP server)")
                print(f"TLS:             tls://{host}:{tls.port}")
                print(f"DNS:             dns://{host}:{dns.port}/www.{LAB_ZONE}  (slow.{LAB_ZONE}: +200 ms)")
                print(f"refused port:    tcp://{host}:{refused.port}")
                print(f"black-holed:     tcp://{host}:{blackhole.port}")
                print("HTTP query faults: " + ", ".join(QUERY_KEYS))
                print("Ctrl-C to stop.", flush=True)
                await asyncio.Event().wait()
