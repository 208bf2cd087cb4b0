"""Least privilege and kept secrets in template.yaml: no wildcard action (such as bedrock:*), no
`*` resource; Bedrock only for the stream function, only bedrock:InvokeModelWithResponseStream,
only when LlmProvider=bedrock on its one model's ARNs, or with LlmConfig on the models and
profiles its routes name (BedrockRouteModels, BedrockRouteProfileArns); no secret resolved by the template
(`{{resolve:...}}` puts it in the function's configuration in plain text): secrets are named by
`*_SECRET_ARN` and read at cold start, with GetSecretValue on the named secrets only, and the
OpenAI key readable by the stream function alone; a rule refusing AuthMode=off with a public
function URL; the purge schedule's role may invoke the migrate function and nothing else; every
route of the service (openapi.json) reaches a function (through the HTTP API, or the stream
function's URL for the streaming paths); the stream function may invoke itself (background
responses) and no other function. Run by infra/check-template.sh."""

import json
import sys

from cfnlint.decode import decode


def statements(node, conditions=()):
    """Every policy statement under `node`, with the conditions it sits under."""
    if isinstance(node, dict):
        if "Fn::If" in node:
            name, yes, no = node["Fn::If"]
            yield from statements(yes, conditions + (name,))
            yield from statements(no, conditions + ("!" + name,))
        elif "Effect" in node:
            yield node, conditions
        else:
            for value in node.values():
                yield from statements(value, conditions)
    elif isinstance(node, list):
        for item in node:
            yield from statements(item, conditions)


def as_list(value):
    return value if isinstance(value, list) else [value]


def resources(resource):
    """The resource strings of a statement, through Fn::If and Fn::Sub."""
    for r in as_list(resource):
        if isinstance(r, dict) and "Fn::If" in r:
            yield from resources(r["Fn::If"][1])
            yield from resources(r["Fn::If"][2])
        elif isinstance(r, dict) and "Fn::Split" in r:
            yield json.dumps(r)
        elif isinstance(r, dict) and "Fn::Sub" in r:
            yield r["Fn::Sub"] if isinstance(r["Fn::Sub"], str) else r["Fn::Sub"][0]
        elif isinstance(r, list):
            yield from resources(r)
        else:
            yield r


# Each function's database login (the Data API connects with its secret).
LOGIN_OF = {
    "GetFunction": "ReaderLogin",
    "SearchFunction": "ReaderLogin",
    "HistoryFunction": "HistoryLogin",
    "StreamFunction": "WriterLogin",
}
DB_SECRETS = {"DbSecretArn", "ReaderLogin", "HistoryLogin", "WriterLogin"}


def secret_checks(template, text):
    """Secrets are named, never resolved into the configuration, and read only where needed."""
    problems = []
    if "{{resolve:" in text:
        problems.append("a secret is resolved by the template ({{resolve:...}})")
    for name, res in template["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        for st, _ in statements(res["Properties"].get("Policies", [])):
            if "secretsmanager:GetSecretValue" not in as_list(st.get("Action", [])):
                continue
            for r in resources(st.get("Resource")):
                if not isinstance(r, dict) or "Ref" not in r:
                    continue
                if r["Ref"] == "OpenAiApiKeySecretArn" and name != "StreamFunction":
                    problems.append(f"{name} may read the provider's key")
                if r["Ref"] == "AuthTokenSecretArn" and name == "MigrateFunction":
                    problems.append("the migrate function may read the static key")
                # The read functions connect as their read-only logins (migration V9).
                login = LOGIN_OF.get(name)
                if login and r["Ref"] in DB_SECRETS and r["Ref"] != login:
                    problems.append(f"{name} may connect as {r['Ref']}, not only {login}")
    rules = template.get("Rules", {})
    keyless = [
        r for r in rules.values()
        if "AuthMode" in str(r) and "UrlAuthType" in str(r) and "'off'" in str(r)
        and "NONE" in str(r)
    ]
    if not keyless:
        problems.append("no rule refuses AuthMode=off with UrlAuthType=NONE")
    return problems


# Paths only the stream function's URL serves (its responses stream; the HTTP API buffers).
STREAM_URL_PATHS = ("/stream", "/v1/", "/export")


def route_checks(template):
    """Each path and method of openapi.json is routed to a function in AWS."""
    with open("openapi.json", encoding="utf-8") as f:
        document = json.load(f)
    routed = set()
    for res in template["Resources"].values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        for event in res["Properties"].get("Events", {}).values():
            if event.get("Type") == "HttpApi":
                props = event["Properties"]
                routed.add((props["Path"], props["Method"].lower()))
    problems = []
    for path, methods in document["paths"].items():
        # Every function answers /health on its own URL.
        if path == "/health" or path.startswith(STREAM_URL_PATHS):
            continue
        for method in methods:
            if (path, method) not in routed:
                problems.append(f"{method.upper()} {path} reaches no function in template.yaml")
    return problems


def schedule_checks(template):
    """The purge schedule's role invokes the migrate function, and nothing else."""
    role = template["Resources"].get("PurgeScheduleRole")
    if role is None:
        return ["no PurgeScheduleRole: RETENTION_DAYS would never run in AWS"]
    problems = []
    for st, _ in statements(role["Properties"].get("Policies", [])):
        if as_list(st.get("Action")) != ["lambda:InvokeFunction"]:
            problems.append(f"PurgeScheduleRole may {st.get('Action')}")
        if as_list(st.get("Resource")) != [{"Fn::GetAtt": ["MigrateFunction", "Arn"]}]:
            problems.append(f"PurgeScheduleRole may act on {st.get('Resource')}")
    return problems


def self_invoke_checks(template):
    """The stream function may invoke itself (background responses), and nothing else."""
    policy = template["Resources"].get("StreamSelfInvokePolicy")
    if policy is None:
        return ["no StreamSelfInvokePolicy: background responses would never run in AWS"]
    problems = []
    props = policy["Properties"]
    if props.get("Roles") != [{"Ref": "StreamFunctionRole"}]:
        problems.append(f"StreamSelfInvokePolicy is attached to {props.get('Roles')}")
    for st, _ in statements(props.get("PolicyDocument", {})):
        if as_list(st.get("Action")) != ["lambda:InvokeFunction"]:
            problems.append(f"StreamSelfInvokePolicy allows {st.get('Action')}")
        if as_list(st.get("Resource")) != [{"Fn::GetAtt": ["StreamFunction", "Arn"]}]:
            problems.append(f"StreamSelfInvokePolicy acts on {st.get('Resource')}")
    return problems


def main():
    template, matches = decode("template.yaml")
    if matches:
        sys.exit(f"template.yaml does not parse: {matches}")
    with open("template.yaml", encoding="utf-8") as f:
        problems = secret_checks(template, f.read())
    problems += route_checks(template) + schedule_checks(template) + self_invoke_checks(template)
    bedrock = []
    for name, res in template["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        for st, conditions in statements(res["Properties"].get("Policies", [])):
            actions = as_list(st.get("Action", []))
            for action in actions:
                if "*" in action:
                    problems.append(f"{name}: wildcard action {action}")
            for r in resources(st.get("Resource")):
                if r == "*" or (isinstance(r, str) and r.endswith("/*")):
                    problems.append(f"{name}: wildcard resource {r}")
            if any(a.startswith("bedrock:") for a in actions):
                bedrock.append((name, st, conditions))
    if not bedrock:
        problems.append("no Bedrock statement: the stream function cannot call Bedrock")
    # Each condition that may allow Bedrock, and what every resource under it must name.
    allowed_under = {
        "UseBedrock": "${BedrockModelId}",
        "HasRouteModels": "BedrockRouteModels",
        "HasRouteProfiles": "BedrockRouteProfileArns",
    }
    for name, st, conditions in bedrock:
        if name != "StreamFunction":
            problems.append(f"{name} may call Bedrock; only the stream function should")
        condition = conditions[0] if conditions else None
        if condition not in allowed_under:
            problems.append(f"{name}: Bedrock allowed outside UseBedrock and the route conditions")
            continue
        if as_list(st["Action"]) != ["bedrock:InvokeModelWithResponseStream"]:
            problems.append(f"{name}: Bedrock actions {st['Action']}")
        for r in resources(st["Resource"]):
            text = r if isinstance(r, str) else json.dumps(r)
            if allowed_under[condition] not in text:
                problems.append(f"{name}: Bedrock resource {text} is not the configured models")
    if problems:
        sys.exit("least-privilege check failed:\n  " + "\n  ".join(problems))
    print("check_policies.py: no wildcard actions or resources; Bedrock only for the stream "
          "function, only with LlmProvider=bedrock (its model) or LlmConfig (its routes' models "
          "and profiles); no secret resolved by the "
          "template, each read only where it is needed; no keyless public URL; the purge "
          "schedule invokes only the migrate function; the stream function invokes only "
          "itself; every route reaches a function")


if __name__ == "__main__":
    main()
