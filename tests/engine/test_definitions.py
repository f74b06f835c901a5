"""Task YAML → definitions: one file per task or per DAG, every problem named with its file and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.definitions import DefinitionError, find_cycle, load_dir


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_dag_file_and_single_task_files_load_together(tmp_path: Path) -> None:
    write(tmp_path, "sales.yaml", """
        dag: sales
        tasks:
          - name: clean
            kind: sql
            on_file: [sales.orders]
            timeout: 10m
            sql:
              query: "CREATE OR REPLACE TABLE mart.clean AS SELECT * FROM sales.orders WHERE day = @day"
              parameters: {day: date}
          - name: notify
            kind: python
            depends_on: [clean]
            max_attempts: 5
            python: {callable: "engine.kinds.python:noop"}
        """)
    write(tmp_path, "sub/refresh.yml", """
        name: refresh
        kind: powerbi
        depends_on: [notify]
        schedule: "0 6 * * *"
        powerbi: {report: {group_id: g, dataset_id: d}}
        """)
    loaded = {d.name: d for _, d in load_dir(tmp_path)}
    assert set(loaded) == {"clean", "notify", "refresh"}
    clean = loaded["clean"]
    assert (clean.dag, clean.timeout, clean.max_attempts, clean.outputs) == ("sales", 600, 3, ["mart.clean"])
    assert clean.sql is not None and clean.sql.parameters["day"].type == "DATE"
    assert loaded["notify"].max_attempts == 5 and loaded["refresh"].dag is None
    assert loaded["refresh"].powerbi is not None and loaded["refresh"].powerbi.report.daily_limit == 8


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\nkind: sql\n", "a.yaml: task 'a': kind sql needs a 'sql' payload"),
    ("name: a\nkind: python\npython: {callable: x}\n", "a.yaml: task 'a': python.callable: String should match"),
    ("name: a\nkind: python\npython: {callable: 'm:f'}\nsql: {query: x}\n", "'sql' payload given but kind is python"),
    ("name: a\nkind: shell\n", "a.yaml: task 'a': kind: Input should be 'sql'"),
    ("name: a\nkind: sql\nsql: {query: x}\ntimeout: soon\n", "timeout: 'soon' is not a duration"),
    ("name: a\nkind: sql\nsql: {query: x}\non_file: [orders]\n",
     "a.yaml: task 'a': on_file: 'orders' is not 'dataset.table'"),
    ('name: a\nkind: sql\nsql: {query: x}\non_file: ["sales.orders\\n"]\n',  # `$` accepted a trailing newline
     "is not 'dataset.table'"),
    ('name: a\nkind: sql\nsql: {query: x, parameters: {"day\\n": date}}\n', "parameter name 'day\\n' is invalid"),
    ("name: a\nkind: sql\nsql: {query: x}\nretries: 3\n", "a.yaml: task 'a': retries: Extra inputs are not permitted"),
    ("name: a\nkind: sql\nsql: {query: x, parameters: {batch_id: INT64}}\n", "'batch_id' is provided by the engine"),
    ("name: a\nkind: wait_for_files\nwait_for_files: {tables: []}\n", "wait_for_files.tables: List should have"),
    ("name: a\nkind: dataform\ndataform: {repo: {project: p, location: l, repository: r}}\n",
     "set one of git_commitish, workspace or release_config"),
    ("- just a list\n", "a.yaml: expected a task mapping"),
    ("tasks: []\n", "a.yaml: 'tasks' must be a non-empty list"),
])
def test_invalid_definitions_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "a.yaml", text)
    with pytest.raises(DefinitionError) as caught:
        load_dir(tmp_path)
    assert message in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "dag.yaml", """
        tasks:
          - {name: ok, kind: python, python: {callable: "a:b"}}
          - {name: bad1, kind: sql}
          - {kind: python, python: {callable: "a:b"}}
        """)
    with pytest.raises(DefinitionError) as caught:
        load_dir(tmp_path)
    text = str(caught.value)
    assert "tasks[1] (task 'bad1'): kind sql needs a 'sql' payload" in text
    assert "tasks[2]: name: Field required" in text


def test_unknown_dependency_is_named(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: a\nkind: python\npython: {callable: 'm:f'}\ndepends_on: [ghost]\n")
    with pytest.raises(DefinitionError) as caught:
        load_dir(tmp_path)
    assert "a.yaml: task 'a': depends_on names unknown task 'ghost'" in str(caught.value)


def test_cycle_is_rejected_with_the_cycle_printed(tmp_path: Path) -> None:
    write(tmp_path, "dag.yaml", """
        tasks:
          - {name: a, kind: python, python: {callable: "m:f"}, depends_on: [c]}
          - {name: b, kind: python, python: {callable: "m:f"}, depends_on: [a]}
          - {name: c, kind: python, python: {callable: "m:f"}, depends_on: [b]}
          - {name: d, kind: python, python: {callable: "m:f"}, depends_on: [a]}
        """)
    with pytest.raises(DefinitionError, match=r"dependency cycle: a → b → c → a \(in .*dag.yaml\)"):
        load_dir(tmp_path)


def test_find_cycle_self_edge_and_acyclic() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_duplicate_task_names_across_files(tmp_path: Path) -> None:
    for name in ("one.yaml", "two.yaml"):
        write(tmp_path, name, "name: same\nkind: python\npython: {callable: 'm:f'}\n")
    with pytest.raises(DefinitionError, match=r"two.yaml: task 'same' is also defined in .*one.yaml"):
        load_dir(tmp_path)
