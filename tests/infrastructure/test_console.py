"""The web console as deployed (stacks/constructs/console.py), read from the template: CloudFront
reads a private bucket through origin access control over HTTPS with a strict CSP; Cognito
sign-in is closed to strangers and needs a second factor; the signed-in role may only invoke
this API; the files are deployed with the config that points the page at the API; the console
is on by default and can be left out; restricted CORS origins get the console's origin added; on
a domain of its own it is served with TLS 1.2+. (`template_json`, the default deployment, is
conftest's; cdk-nag runs in every synth: an unacknowledged finding raises.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stacks.config import DeploymentConfig
from stacks.constructs.api import INVOKE_PATHS
from tests.infrastructure.templates import by_prefix, gateway_allow_origins, resolve, resources, synth

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-1111-2222-3333-444455556666"


def _one(t: dict[str, Any], kind: str) -> dict[str, Any]:
    found = list(resources(t, kind).values())
    assert len(found) == 1, kind
    return found[0]["Properties"]


def test_cloudfront_serves_a_private_bucket_over_https_with_a_strict_csp(template_json: dict[str, Any]) -> None:
    dist = _one(template_json, "AWS::CloudFront::Distribution")["DistributionConfig"]
    behaviour = dist["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert dist["Origins"][0]["OriginAccessControlId"] and dist["DefaultRootObject"] == "index.html"
    assert (
        _one(template_json, "AWS::CloudFront::OriginAccessControl")["OriginAccessControlConfig"]["SigningBehavior"]
        == "always"
    )
    policy_id = behaviour["ResponseHeadersPolicyId"]["Ref"]
    headers = template_json["Resources"][policy_id]["Properties"]["ResponseHeadersPolicyConfig"]
    security = headers["SecurityHeadersConfig"]
    csp = resolve(security["ContentSecurityPolicy"]["ContentSecurityPolicy"])
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe" not in csp
    api = next(iter(resources(template_json, "AWS::ApiGateway::RestApi")))
    assert f"https://ref-{api}.execute-api." in csp  # this API only
    assert "cognito-identity." in csp and "https://*.s3." in csp  # S3 by pattern: see Console.connect
    assert security["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert security["FrameOptions"]["FrameOption"] == "DENY"
    site = by_prefix(template_json, "AWS::S3::Bucket", "ConsoleSite")["Properties"]
    assert all(site["PublicAccessBlockConfiguration"].values())


def test_every_viewer_request_is_logged_and_the_deploy_needs_no_cloudfront_grant(template_json: dict[str, Any]) -> None:
    """Standard logs go to the stack's access-log bucket (ACLs enabled, which CloudFront's logs need);
    nothing is cached, so a deploy invalidates nothing and its function gets no CloudFront action."""
    dist = _one(template_json, "AWS::CloudFront::Distribution")["DistributionConfig"]
    [logs] = [k for k in resources(template_json, "AWS::S3::Bucket") if k.startswith("JobsAccessLogs")]
    assert dist["Logging"]["Bucket"] == {"Fn::GetAtt": [logs, "RegionalDomainName"]}
    bucket = template_json["Resources"][logs]["Properties"]
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerPreferred"}]
    assert dist["DefaultCacheBehavior"]["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # CachingDisabled
    deploy = _one(template_json, "Custom::CDKBucketDeployment")
    assert "DistributionId" not in deploy
    actions = [
        a
        for name, p in resources(template_json, "AWS::IAM::Policy").items()
        if name.startswith("CustomCDKBucketDeployment")
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    assert actions and not [a for a in actions if a.startswith("cloudfront:")]


def test_its_own_domain_is_served_with_tls_1_2(tmp_path: Path) -> None:
    t = synth(tmp_path, console_domain_name="console.example.com", console_certificate_arn=CERTIFICATE)
    dist = _one(t, "AWS::CloudFront::Distribution")["DistributionConfig"]
    assert dist["Aliases"] == ["console.example.com"]
    assert dist["ViewerCertificate"] == {
        "AcmCertificateArn": CERTIFICATE,
        "MinimumProtocolVersion": "TLSv1.2_2021",
        "SslSupportMethod": "sni-only",
    }
    assert _one(t, "AWS::Cognito::UserPoolClient")["CallbackURLs"] == ["https://console.example.com/"]
    assert t["Outputs"]["ConsoleUrl"]["Value"] == "https://console.example.com"


def test_a_domain_needs_its_certificate() -> None:
    with pytest.raises(ValidationError, match="go together"):
        DeploymentConfig(console_domain_name="console.example.com")


def test_sign_in_is_closed_to_strangers_and_needs_a_second_factor(template_json: dict[str, Any]) -> None:
    pool = _one(template_json, "AWS::Cognito::UserPool")
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["MfaConfiguration"] == "ON" and pool["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    client = _one(template_json, "AWS::Cognito::UserPoolClient")
    assert client["GenerateSecret"] is False and client["AllowedOAuthFlows"] == ["code"]
    assert [resolve(u) for u in client["CallbackURLs"]] == [f"https://{resolve(_distribution_domain(template_json))}/"]
    identities = _one(template_json, "AWS::Cognito::IdentityPool")
    assert identities["AllowUnauthenticatedIdentities"] is False


def _distribution_domain(t: dict[str, Any]) -> dict[str, Any]:
    dist = next(iter(resources(t, "AWS::CloudFront::Distribution")))
    return {"Fn::GetAtt": [dist, "DomainName"]}


def test_the_signed_in_role_may_only_invoke_this_api(template_json: dict[str, Any]) -> None:
    attach = _one(template_json, "AWS::Cognito::IdentityPoolRoleAttachment")
    role = attach["Roles"]["authenticated"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in resources(template_json, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert [s["Action"] for s in statements] == ["execute-api:Invoke"]
    api = next(iter(resources(template_json, "AWS::ApiGateway::RestApi")))
    arns = [resolve(r) for r in statements[0]["Resource"]]
    assert arns and all(f":ref-{api}/" in arn for arn in arns)
    # the job and model routes, as the invoke policy: never the operator's statistics (their own
    # policy), so a person signed in to the console sees no other owner's jobs through it
    assert sorted(arn.split("/*/", 1)[1] for arn in arns) == sorted(p.lstrip("/") for p in INVOKE_PATHS)
    assert not any("admin" in arn for arn in arns)


def test_the_files_go_up_with_a_config_naming_the_api_and_sign_in(template_json: dict[str, Any]) -> None:
    deploy = _one(template_json, "Custom::CDKBucketDeployment")
    assert len(deploy["SourceObjectKeys"]) == 2, deploy  # the built files, and config.json
    config = json.dumps(deploy["SourceMarkers"])  # config.json's values made at deploy
    for resource in ("ApiGateway", "ConsoleUsers", "ConsoleIdentities"):
        assert resource in config
    outputs = template_json["Outputs"]
    assert "ConsoleUrl" in outputs and "ConsoleUserPoolId" in outputs


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth(tmp_path_factory.mktemp("restricted"), cors_origins=["https://app.example.com"])


def test_restricted_cors_origins_get_the_consoles_origin(restricted: dict[str, Any]) -> None:
    console = f"https://{resolve(_distribution_domain(restricted))}"
    media = by_prefix(restricted, "AWS::S3::Bucket", "JobsMedia")["Properties"]["CorsConfiguration"]["CorsRules"]
    assert [[resolve(o) for o in r["AllowedOrigins"]] for r in media] == [["https://app.example.com"], [console]]
    assert all(r["ExposedHeaders"] == ["ETag"] and "PUT" in r["AllowedMethods"] for r in media)
    api = by_prefix(restricted, "AWS::Lambda::Function", "ApiCD")["Properties"]["Environment"]["Variables"]
    assert console in "".join(resolve(v) for v in api.values())
    assert gateway_allow_origins(restricted) == {"method.request.header.Origin"}  # two origins: echoed, checked


def test_the_console_is_on_by_default_and_can_be_left_out(tmp_path: Path) -> None:
    assert DeploymentConfig().console is True
    t = synth(tmp_path, console=False)
    for kind in ("AWS::CloudFront::Distribution", "AWS::Cognito::UserPool", "AWS::Cognito::IdentityPool"):
        assert resources(t, kind) == {}
    assert "ConsoleUrl" not in t["Outputs"]
