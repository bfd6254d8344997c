"""The dashboards against Grafana's own published schema: the TypeScript types of
@grafana/schema (tests/grafana-schema/package.json pins the version), checked by tsc.

Each dashboard must satisfy `Dashboard`, and each panel, the options and field config of its
panel type (`stat`, `timeseries`, ...) exactly: an option Grafana does not know is one it
would silently drop, so it is an error here (TypeScript's excess-property check), as is a
value outside an option's enum. Options may be partial, as Grafana fills in its defaults.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require

TYPES_DIR = ROOT / "tests" / "grafana-schema"
TSC = TYPES_DIR / "node_modules" / ".bin" / "tsc"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
COMPOSABLE = "@grafana/schema/dist/esm/raw/composable"

# Panel type -> (module under composable/, its types file, whether it has a custom FieldConfig).
PANEL_TYPES = {
    "stat": ("stat", "StatPanelCfg", False),
    "timeseries": ("timeseries", "TimeSeriesPanelCfg", True),
    "state-timeline": ("statetimeline", "StateTimelinePanelCfg", True),
    "bargauge": ("bargauge", "BarGaugePanelCfg", False),
    "table": ("table", "TablePanelCfg", True),
    "heatmap": ("heatmap", "HeatmapPanelCfg", True),
    "status-history": ("statushistory", "StatusHistoryPanelCfg", True),
    "gauge": ("gauge", "GaugePanelCfg", False),
    "text": ("text", "TextPanelCfg", False),
    "piechart": ("piechart", "PieChartPanelCfg", True),
}

PRELUDE = """\
import type {{
  AnnotationQuery, Dashboard, DataQuery, FieldConfig, FieldConfigSource, Panel, RowPanel, VariableModel,
}} from "@grafana/schema";
{imports}

// JSON has no enums: an enum-typed field takes the enum's string values. Optional fields stay
// optional and required ones required.
type Json<T> = T extends string ? `${{T}}`
  : T extends number | boolean | null | undefined ? T
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? {{ [K in keyof T]: Json<T[K]> }}
  : T;
// Panel options may be partial: Grafana fills in the plugin's defaults.
type PartialJson<T> = T extends string ? `${{T}}`
  : T extends number | boolean | null | undefined ? T
  : T extends ReadonlyArray<infer U> ? Array<PartialJson<U>>
  : T extends object ? {{ [K in keyof T]?: PartialJson<T[K]> }}
  : T;
// A Prometheus query (Grafana's prometheus data source; @grafana/schema has no type for it).
type PromQuery = Json<DataQuery> & {{
  expr: string; instant?: boolean; range?: boolean; exemplar?: boolean; editorMode?: "code" | "builder";
  format?: "time_series" | "table" | "heatmap"; legendFormat?: string; intervalFactor?: number;
  interval?: string;
}};
type Variable = Json<VariableModel> & {{ definition?: string }};
// Prometheus annotations also read titleFormat, textFormat, tagKeys and useValueForTime from
// the annotation itself; __inputs and __requires are the export format's import metadata.
type Annotation = Omit<Json<AnnotationQuery>, "target"> & {{
  target?: PromQuery; titleFormat?: string; textFormat?: string; tagKeys?: string;
  useValueForTime?: boolean; step?: string;
}};
type DashboardJson = Omit<Json<Dashboard>, "annotations" | "templating"> & {{
  annotations?: {{ list?: Array<Annotation> }};
  templating?: {{ list?: Array<Variable> }};
  __inputs?: Array<unknown>;
  __requires?: Array<unknown>;
}};
// A panel of one type: Grafana's generic panel, with that type's options and custom field
// config instead of the loose records, and Prometheus targets. Excess keys are errors:
// Grafana would drop them.
type PanelOf<Options, Custom> = Omit<Json<Panel>, "options" | "fieldConfig" | "targets"> & {{
  options?: PartialJson<Options>;
  fieldConfig?: Omit<Json<FieldConfigSource>, "defaults"> & {{
    defaults: Omit<Json<FieldConfig>, "custom"> & {{ custom?: PartialJson<Custom> }};
  }};
  targets?: Array<PromQuery>;
}};
type Row = Omit<Json<RowPanel>, "panels"> & {{ panels: Array<unknown> }};  // nested panels: checked one by one
type NoCustom = Record<string, never>;
"""


def panel_type_alias(kind: str) -> str:
    return "P_" + kind.replace("-", "_")


def prelude() -> str:
    imports, aliases = [], []
    for kind, (module, cfg, custom) in PANEL_TYPES.items():
        name = panel_type_alias(kind)
        imports.append(f'import type * as {name}_ from "{COMPOSABLE}/{module}/panelcfg/x/{cfg}_types.gen";')
        aliases.append(f"type {name} = PanelOf<{name}_.Options, "
                       f"{name + '_.FieldConfig' if custom else 'NoCustom'}>;")
    return PRELUDE.format(imports="\n".join(imports)) + "\n".join(aliases) + "\n"


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def source(dashboards: dict[str, dict[str, Any]]) -> str:
    """One TypeScript module: each dashboard `satisfies Dashboard`, each panel its type."""
    lines = [prelude()]
    for name, dashboard in dashboards.items():
        ident = name.removesuffix(".json").replace("-", "_")
        lines.append(f"// {name}\nexport const {ident} = {json.dumps(dashboard)} satisfies DashboardJson;")
        for panel in all_panels(dashboard):
            kind = panel["type"]
            where = f"{ident}_panel_{panel['id']}"
            if kind == "row":
                lines.append(f"export const {where} = {json.dumps(panel)} satisfies Row;")
            else:
                assert kind in PANEL_TYPES, f"{name}: panel type {kind} has no schema mapping here"
                lines.append(f"export const {where} = {json.dumps(panel)} satisfies "
                             f"{panel_type_alias(kind)};")
    return "\n".join(lines) + "\n"


def tsc(tmp_path: Path, dashboards: dict[str, dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    require(TSC.exists(), f"{TSC} is missing: npm ci --prefix {TYPES_DIR.relative_to(ROOT)}")
    # The module must sit where Node's resolution finds tests/grafana-schema/node_modules.
    work = TYPES_DIR / f".check-{tmp_path.name}"
    work.mkdir(exist_ok=True)
    try:
        (work / "dashboards.ts").write_text(source(dashboards))
        return subprocess.run(
            [str(TSC), "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022",
             "--module", "esnext", "--moduleResolution", "bundler", str(work / "dashboards.ts")],
            capture_output=True, text=True, timeout=300, cwd=TYPES_DIR)
    finally:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


def load_all() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def test_every_dashboard_and_panel_satisfies_grafanas_schema(tmp_path: Path) -> None:
    result = tsc(tmp_path, load_all())
    assert result.returncode == 0, result.stdout + result.stderr


def plant(change: str) -> dict[str, dict[str, Any]]:
    """The overview dashboard with one planted mistake."""
    dashboards = {"overview.json": json.loads((ROOT / "dashboards" / "overview.json").read_text())}
    panels = all_panels(dashboards["overview.json"])
    first = {kind: next(p for p in panels if p["type"] == kind)
             for kind in ("stat", "timeseries", "state-timeline", "bargauge", "table", "row")}
    {
        "unknown stat option": lambda: first["stat"]["options"].update(colourMode="background"),
        "stat colorMode outside its enum": lambda: first["stat"]["options"].update(colorMode="bg"),
        "unknown nested option": lambda: first["stat"]["options"]["reduceOptions"].update(calc=["last"]),
        "custom field config on a stat": lambda: first["stat"]["fieldConfig"]["defaults"].update(
            custom={"lineWidth": 2}),
        "unknown timeseries custom option": lambda: first["timeseries"]["fieldConfig"]["defaults"]
        ["custom"].update(lineWitdh=2),
        "legend placement outside its enum": lambda: first["timeseries"]["options"]["legend"].update(
            placement="top"),
        "state-timeline option of another panel type": lambda: first["state-timeline"]["options"].update(
            colorMode="background"),
        "bargauge displayMode outside its enum": lambda: first["bargauge"]["options"].update(
            displayMode="bars"),
        "unknown field config default": lambda: first["table"]["fieldConfig"]["defaults"].update(units="s"),
        "row without collapsed": lambda: first["row"].pop("collapsed"),
        "string schemaVersion": lambda: dashboards["overview.json"].update(schemaVersion="41"),
    }[change]()
    return dashboards


@pytest.mark.parametrize("change", [
    "unknown stat option", "stat colorMode outside its enum", "unknown nested option",
    "custom field config on a stat", "unknown timeseries custom option",
    "legend placement outside its enum", "state-timeline option of another panel type",
    "bargauge displayMode outside its enum", "unknown field config default", "row without collapsed",
    "string schemaVersion",
])
def test_the_check_catches_what_grafana_would_drop_or_reject(tmp_path: Path, change: str) -> None:
    result = tsc(tmp_path, plant(change))
    assert result.returncode != 0, f"tsc accepted a dashboard with {change}"
    assert "error TS" in result.stdout
