"""dependencies: and crowd: in the config: strict, every error with its dotted path and line."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, load_text

HEAD = """upstreams:
  claude:
    checks: [{name: api, kind: tcp, target: "127.0.0.1:1"}]
"""


def issues(body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(HEAD + body, "c.yml")
    return [str(i) for i in caught.value.issues]


def test_the_spec_example_loads_with_defaults() -> None:
    cfg = load_text(HEAD + """    dependencies:
      - {name: aws, kind: aws_health, url: https://health.aws.amazon.com/public/currentevents,
         services: [bedrock, ec2], regions: [us-east-1, us-west-2]}
      - {name: gcp, kind: gcp_status, url: https://status.cloud.google.com/incidents.json,
         products: [Vertex Gemini API], locations: [us-east5, global]}
      - {name: azure, kind: azure_status, url: https://azure.status.microsoft/en-us/status/feed/}
    crowd:
      - {name: openrouter, kind: openrouter, url: https://openrouter.ai/api/v1,
         models: [anthropic/claude-sonnet-4.6], providers: [Anthropic]}
""", "c.yml")
    (up,) = cfg.upstreams
    aws, gcp, azure = up.dependencies
    assert (aws.services, aws.regions) == (("bedrock", "ec2"), ("us-east-1", "us-west-2"))
    assert (gcp.services, gcp.regions) == (("Vertex Gemini API",), ("us-east5", "global"))
    assert (azure.interval, azure.timeout) == (120.0, 10.0)
    (crowd,) = up.crowd
    assert (crowd.interval, crowd.down_below, crowd.models) == (
        60.0, 0.9, ("anthropic/claude-sonnet-4.6",))
    names = [c.name for c in cfg.all_checks()]
    assert names == ["api", "dependencies/aws", "dependencies/gcp", "dependencies/azure",
                     "crowd/openrouter"]


@pytest.mark.parametrize(("body", "expected"), [
    ("    dependencies: {name: aws}\n", "c.yml:4: upstreams.claude.dependencies: must be a list"),
    ("    dependencies:\n      - {name: x, kind: statuspage, url: http://127.0.0.1/}\n",
     "c.yml:5: upstreams.claude.dependencies[0].kind: must be one of gcp_status, aws_health"),
    ("    crowd:\n      - {name: x, kind: aws_health, url: http://127.0.0.1/}\n",
     "c.yml:5: upstreams.claude.crowd[0].kind: must be one of openrouter"),
    ("    dependencies:\n      - {name: x, kind: gcp_status}\n",
     "c.yml:5: upstreams.claude.dependencies[0]: missing required key url"),
    ("    dependencies:\n      - {name: x, kind: gcp_status, url: http://127.0.0.1/,\n"
     "         services: [a]}\n",
     "c.yml:6: upstreams.claude.dependencies[0].services: unknown key"),  # gcp says products
    ("    dependencies:\n      - {name: x, kind: aws_health, url: http://127.0.0.1/,\n"
     "         regions: us-east-1}\n",
     "c.yml:6: upstreams.claude.dependencies[0].regions: must be a list of strings"),
    ("    dependencies:\n      - {name: x, kind: aws_health, url: ftp://h/}\n",
     "c.yml:5: upstreams.claude.dependencies[0].url: must be an http:// or https:// URL"),
    ("    dependencies:\n      - {name: x, kind: aws_health, url: http://127.0.0.1/,"
     " interval: 10s, timeout: 20s}\n",
     "c.yml:5: upstreams.claude.dependencies[0].timeout: must not exceed the interval"),
    ("    dependencies:\n      - {name: x, kind: aws_health, url: http://127.0.0.1/}\n"
     "      - {name: x, kind: gcp_status, url: http://127.0.0.1/}\n",
     "c.yml:6: upstreams.claude.dependencies[1].name: duplicate name \"x\""),
    ("    crowd:\n      - {name: o, kind: openrouter, url: http://127.0.0.1/}\n",
     "c.yml:5: upstreams.claude.crowd[0]: missing required key models"),
    ("    crowd:\n      - {name: o, kind: openrouter, url: http://127.0.0.1/,\n"
     "         models: [claude-sonnet-4.6]}\n",
     "c.yml:6: upstreams.claude.crowd[0].models: must be OpenRouter model ids"),
    ("    crowd:\n      - {name: o, kind: openrouter, url: http://127.0.0.1/, models: [a/b],\n"
     "         down_below: 1.5}\n",
     "c.yml:6: upstreams.claude.crowd[0].down_below: must be a number from 0 to 1"),
    ("    crowd:\n      - {name: o, kind: openrouter, url: http://127.0.0.1/, models: [a/b],\n"
     "         token: abc}\n",
     "c.yml:6: upstreams.claude.crowd[0].token: inline secrets are not allowed"),
])
def test_errors_name_path_and_line(body: str, expected: str) -> None:
    found = issues(body)
    assert any(i.startswith(expected) for i in found), found
