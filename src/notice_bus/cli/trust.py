"""``notice-bus pki``, ``acl apply|show``, ``bureau revoke`` and ``keys rotate``: who is
trusted, for what, and with which keys."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from notice_bus.cli.common import Command, country, country_list
from notice_bus.errors import ConfigError
from notice_bus.runtime.settings import STATE_DIR, Settings

#: Help of the commands of actions this module's commands belong to.
GROUPS = {
    "acl": "the broker's grants to HQ, the tracker, bureaus and hubs",
    "bureau": "a bureau's access",
    "keys": "HQ's signing keys",
}


def _hub(text: str) -> tuple[str, list[str]]:
    name, sep, codes = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"not NAME=CC,CC: {text!r}")
    return name.strip(), country_list(codes)


def _pki_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--dir", default=str(STATE_DIR / "pki"), help="where to write them")
    c.add_argument(
        "--countries",
        type=country_list,
        help="a bureau for each: FR,DE (default: none)",
    )
    c.add_argument(
        "--hub",
        type=_hub,
        action="append",
        help="a hub and its countries: europe=FR,DE; repeat for several (default: none)",
    )
    c.add_argument(
        "--broker-name",
        action="append",
        default=[],
        help="a host name clients reach the broker by, for its certificate (beside localhost"
        " and 127.0.0.1); repeat for several",
    )
    c.add_argument(
        "--protocol",
        choices=["SASL_SSL", "SSL"],
        default="SASL_SSL",
        help="what the settings files use: SCRAM over TLS, or mutual TLS",
    )


def _acl_show_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--principal", help="only this one: hq, bureau-FR (default: every one)")


def _revoke_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("country", type=country, nargs="?", help="the bureau's country")
    c.add_argument("--hub", help="revoke this hub instead (default: none)")


def _cmd_pki(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.trust.pki import issue

    written = issue(
        args.dir,
        countries=args.countries or [],
        hubs=dict(args.hub or []),
        protocol=args.protocol,
        broker_names=args.broker_name,
    )
    print(f"wrote {len(written)} files in {args.dir}" + ("" if written else " (all there already)"))
    print(
        "  each principal's settings: <dir>/<name>/notice-bus.toml (NOTICE_BUS_CONFIG);"
        " keep ca.key and signing/root.key offline"
    )
    return 0


def _cmd_acl_apply(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.trust.acl import apply_registry

    done = apply_registry(settings)
    print(applied(done))
    return 0


def applied(done: object) -> str:
    from notice_bus.trust.acl import Applied

    assert isinstance(done, Applied)
    text = f"ACLs: {done.created} created, {done.deleted} deleted"
    if done.users_added or done.users_removed:
        text += f"; SCRAM users added: {', '.join(done.users_added) or 'none'}"
        text += f", removed: {', '.join(done.users_removed) or 'none'}"
    return text


def _cmd_acl_show(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.runtime.kafka import admin_client
    from notice_bus.trust.acl import current, registry_path, table
    from notice_bus.trust.principals import read_principals

    names = list(read_principals(registry_path(settings)))
    if args.principal:
        names = [n for n in names if n == args.principal]
        if not names:
            raise ConfigError(f"{args.principal} is not in {registry_path(settings)}")
    admin = admin_client(settings)
    try:
        print(table(current(admin, names)))
    finally:
        admin.close()
    return 0


def _cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.trust.acl import revoke
    from notice_bus.trust.principals import bureau_name, hub_name

    if bool(args.country) == bool(args.hub):
        raise ConfigError("give a country, or --hub NAME")
    name = hub_name(args.hub) if args.hub else bureau_name(args.country)
    done = revoke(settings, name, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    print(f"revoked {name}: {applied(done)}")
    return 0


def _rotate_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--root-key", required=True, help="the offline root's private key file")
    c.add_argument(
        "--revoke",
        action="store_true",
        help="the current key may have leaked: invalidate all it signed, and sign the notices"
        " again with the new key",
    )


def _cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from notice_bus.trust.rotation import rotate

    keyring, signed = rotate(settings, args.root_key, revoke=args.revoke)
    current = keyring.current("hq")
    print(f"keyring version {keyring.version}: HQ signs with key {current.kid} from now on")
    if args.revoke:
        print(f"signed again: {signed} notice records")
    return 0


COMMANDS = {
    "keys rotate": Command(
        "give HQ a new signing key (the old one retired, or revoked with --revoke)",
        _rotate_args,
        _cmd_rotate,
    ),
    "pki": Command(
        "issue a CA, certificates and SCRAM passwords for HQ, the tracker, bureaus and hubs,"
        " and HQ's signing keys (idempotent; files 0600)",
        _pki_args,
        _cmd_pki,
    ),
    "acl apply": Command(
        "grant each principal of principals_file exactly what its role needs (idempotent)",
        None,
        _cmd_acl_apply,
    ),
    "acl show": Command(
        "print the broker's grants to the registry's principals", _acl_show_args, _cmd_acl_show
    ),
    "bureau revoke": Command(
        "remove a bureau's (or hub's) grants and SCRAM user, effective at once",
        _revoke_args,
        _cmd_revoke,
    ),
}
