"""Every gcloud command `run/scripts/deploy --dry-run` prints, parsed by the real gcloud CLI.

With an empty configuration directory and prompts disabled, a well-formed command stops at the
credentials check ("You do not currently have an active account selected"); a flag gcloud does
not know, or a value it refuses, stops earlier with another message. Skipped without gcloud.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "run" / "scripts" / "deploy"
NO_CREDENTIALS = "You do not currently have an active account selected"
# What `$NAME` words stand for once the lookups ran: a trigger and a subscription resource name.
STANDINS = {"TRIGGER": "projects/acme-data/locations/europe-west1/triggers/caf-pubsub-123456",
            "SUB": "projects/acme-data/subscriptions/eventarc-europe-west1-caf-pubsub-123456-sub-001"}


def gcloud_commands(tmp_path: Path) -> list[list[str]]:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "nightly.yaml").write_text("name: nightly\nkind: sql\nschedule: '0 3 * * *'\nsql: {query: SELECT 1}\n")
    args = ["--project=acme-data", "--bucket=acme-landing", "--cloud-sql-instance=acme-data:europe-west1:caf",
            "--db-password-secret=caf-db-password", "--powerbi-secret=caf-powerbi",
            "--alert-webhooks-secret=caf-alert-webhooks",
            "--service-account=caf-runtime@acme-data.iam.gserviceaccount.com",
            "--operator-audience=https://caf-operator-abc-ew.a.run.app", f"--tasks-dir={tasks}",
            "--purge-schedule=30 3 * * *", "--purge-older-than=120d", "--dry-run"]
    out = subprocess.run([sys.executable, str(DEPLOY), *args], capture_output=True, text=True, check=True).stdout
    commands = []
    for line in out.splitlines():
        lookup = re.fullmatch(r"[A-Z_]+=\$\((.*)\)", line)
        words = shlex.split(lookup.group(1) if lookup else line)
        commands.append([_standin(w) for w in words])
    return commands


def _standin(word: str) -> str:
    word = word.replace("${PROJECT_NUMBER}", "123456789012")
    if not word.startswith("$"):
        return word
    return next(value for prefix, value in STANDINS.items() if word[1:].startswith(prefix))


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_every_deploy_command_is_accepted_by_gcloud_up_to_the_credentials_check(tmp_path: Path) -> None:
    commands = gcloud_commands(tmp_path)
    assert commands and all(c[0] == "gcloud" for c in commands), "deploy prints only gcloud commands"
    updates = [c for c in commands if c[1:4] == ["pubsub", "subscriptions", "update"]]
    assert len(updates) == 2 and all("--dead-letter-topic=caf-events-dead-letter" in c for c in updates)
    assert any("caf-purge" in c and '--message-body={"older_than": "120d"}' in c for c in commands)
    config = tmp_path / "gcloud-config"
    config.mkdir()
    env = {**os.environ, "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)

    def run(cmd: list[str]) -> tuple[list[str], int, str]:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        return cmd, done.returncode, done.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, commands))
    refused = [f"{shlex.join(cmd)}\n  -> {stderr.strip()[:400]}" for cmd, _, stderr in results
               if NO_CREDENTIALS not in stderr]
    assert not refused, "gcloud refused before the credentials check:\n" + "\n".join(refused)
