"""Accounts: `users`."""
from __future__ import annotations

import getpass
import sys

from fusion.cli.common import emit


def _new_password(args) -> str:
    """Typed twice at a terminal; otherwise the first line of stdin (for scripts)."""
    from fusion.core.errors import FusionError

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("the same password again: ") != password:
            raise FusionError("the two passwords differ; type the same one twice")
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise FusionError("no password: type it at the prompt, or pipe it in as one line on stdin")
    return password


def _account_dict(account) -> dict:
    return {"name": account.name, "role": account.role, "disabled": account.disabled, "created_at": account.created_at,
            "created_by": account.created_by, "last_sign_in_at": account.last_sign_in_at}


def cmd_users(args, settings) -> None:
    from fusion.services import accounts
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.users_command == "list":
        found = accounts.list_users(store)
        lines = [f"{a.name}  {a.role}" + ("  (disabled)" if a.disabled else "") for a in found]
        emit({"users": [_account_dict(a) for a in found]}, args.json, "\n".join(lines) or "no accounts yet")
        return
    if args.users_command == "add":
        account = accounts.add_user(store, args.name, _new_password(args), args.role, args.user)
    elif args.users_command == "set-role":
        account = accounts.set_role(store, args.name, args.role, args.user)
    elif args.users_command == "set-password":
        account = accounts.set_password(store, args.name, _new_password(args), args.user)
    else:
        account = accounts.set_disabled(store, args.name, args.users_command == "disable", args.user)
    emit(_account_dict(account), args.json, f"{account.name}: {account.role}" +
          (", disabled" if account.disabled else ""))


def add_commands(sub) -> None:
    user = getpass.getuser()
    from fusion.store.schema import ROLES

    p = sub.add_parser("users", help="accounts for the app's sign-in (FUSION_AUTH=1): add, list, set-role, disable")
    users_sub = p.add_subparsers(dest="users_command", required=True)
    for name, text in (("add", "a new account; the password is prompted for, or read as one line from stdin"),
                       ("set-role", "change an account's role"),
                       ("set-password", "a new password (prompted for, or one line on stdin); open sessions end"),
                       ("disable", "the account can't sign in; its open sessions end"),
                       ("enable", "the account can sign in again"), ("list", "every account and its role")):
        q = users_sub.add_parser(name, help=text)
        if name != "list":
            q.add_argument("name", metavar="NAME")
        if name == "add":
            q.add_argument("--role", default="annotator", choices=ROLES)
        if name == "set-role":
            q.add_argument("role", metavar="ROLE", choices=ROLES)
        q.add_argument("--user", default=user, help="who makes the change (recorded)")
        q.add_argument("--json", action="store_true")
        q.set_defaults(run=cmd_users)
