"""The web console, deployed: its built files (console/dist) in a private bucket behind
CloudFront (origin access control, HTTPS only, a strict Content-Security-Policy and the other
security headers), sign-in with a Cognito user pool (its hosted page, authorization code + PKCE),
and an identity pool that gives each signed-in person short-lived credentials of one role that
may only invoke the API. The API tells the people of that role apart by their Cognito identity
(batchscribe.identity), so each sees only their own jobs.

Made in two steps: the site first (`Console(...)`: the stack adds its origin to the CORS origins
before the bucket and the API read them), then `connect(api)`: the role's grant, the
policy's API and media hosts, and the files with the config.json that points the page at them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_cognito_identitypool as identitypool
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from batchscribe.resources import console_csp
from stacks.config import DeploymentConfig
from stacks.constructs.api import invoke_arns

DIST = Path(__file__).resolve().parents[2] / "console" / "dist"


class Console(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig, access_logs: s3.IBucket) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self,
            "Site",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="console/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.certificate: acm.ICertificate | None = None  # CloudFront's own, unless the config names a domain
        self.distribution = self._distribution(config, access_logs)
        self.url = f"https://{config.console_domain_name or self.distribution.distribution_domain_name}"
        self.user_pool, self.client, self.domain = self._sign_in(config)
        self.identity_pool = identitypool.IdentityPool(
            self,
            "Identities",
            allow_unauthenticated_identities=False,
            authentication_providers=identitypool.IdentityPoolAuthenticationProviders(
                user_pools=[
                    identitypool.UserPoolAuthenticationProvider(user_pool=self.user_pool, user_pool_client=self.client)
                ]
            ),
        )

    @property
    def origin(self) -> str:
        """The console's origin, for the API's and the bucket's CORS."""
        return self.url

    def _distribution(self, config: DeploymentConfig, access_logs: s3.IBucket) -> cloudfront.Distribution:
        """HTTPS only (TLS 1.2+ on a domain of its own; on CloudFront's *.cloudfront.net certificate
        the policy is CloudFront's fixed TLSv1), the bucket read through origin access control, no
        caching (a deploy shows at once without an invalidation; the files are small), each request
        logged into the stack's access-log bucket (ACLs enabled there, which CloudFront's standard
        logs need). Its response headers policy is attached by `connect`, once the hosts its CSP
        names exist."""
        return cloudfront.Distribution(
            self,
            "Distribution",
            comment="Batchscribe web console",
            default_root_object="index.html",
            **self._domain(config),
            enable_logging=True,
            log_bucket=access_logs,
            log_file_prefix="console-viewers/",
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
            ),
        )

    def _domain(self, config: DeploymentConfig) -> dict[str, Any]:
        """The distribution's own name and its ACM certificate (us-east-1), where the config names them."""
        if config.console_domain_name is None or config.console_certificate_arn is None:
            return {}
        self.certificate = acm.Certificate.from_certificate_arn(self, "Certificate", config.console_certificate_arn)
        return {
            "domain_names": [config.console_domain_name],
            "certificate": self.certificate,
            "minimum_protocol_version": cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
        }

    def _headers(self, csp: str) -> cloudfront.ResponseHeadersPolicy:
        return cloudfront.ResponseHeadersPolicy(
            self,
            "Headers",
            comment="Batchscribe console: strict CSP, HSTS, no framing, no referrer",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=csp, override=True
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.days(365), include_subdomains=True, override=True
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True
                ),
            ),
        )

    def _csp(self, api_host: str, media_hosts: list[str]) -> str:
        """Calls to the API, Cognito and the media bucket; audio from the media bucket."""
        cognito_hosts = f"https://cognito-identity.{Aws.REGION}.{Aws.URL_SUFFIX} {self.domain.base_url()}"
        media = " ".join(media_hosts)
        return console_csp(connect=f"{api_host} {cognito_hosts} {media}", media=media)

    def _sign_in(
        self, config: DeploymentConfig
    ) -> tuple[cognito.UserPool, cognito.UserPoolClient, cognito.UserPoolDomain]:
        """People are added by an operator (no self sign-up); strong passwords and a TOTP second factor;
        the hosted sign-in page sends them back to the console with a code (PKCE, no secret)."""
        pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12, require_digits=True, require_lowercase=True, require_uppercase=True, require_symbols=True
            ),
            mfa=cognito.Mfa.REQUIRED,  # a TOTP app, set up on the first sign-in (the hosted page asks)
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN,
        )
        domain = pool.add_domain(
            "SignIn",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=config.console_domain_prefix or f"{config.stack_name.lower()}-{Aws.ACCOUNT_ID}"
            ),
        )
        client = pool.add_client(
            "Console",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[f"{self.url}/"],
                logout_urls=[f"{self.url}/"],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
        )
        return pool, client, domain

    def connect(self, api: apigw.RestApi) -> None:
        """The signed-in people's role may invoke the API's job and model routes, as the invoke
        policy does (never the operator's statistics: their own policy), and nothing else; the
        page's policy lets it reach the API and the media bucket; the files go up with a
        config.json naming them."""
        self.identity_pool.authenticated_role.add_to_principal_policy(
            iam.PolicyStatement(actions=["execute-api:Invoke"], resources=invoke_arns(api))
        )
        api_host = f"https://{api.rest_api_id}.execute-api.{Aws.REGION}.{Aws.URL_SUFFIX}"
        # S3's hosts by pattern, not the bucket's name: the bucket's CORS names this distribution
        # (restricted origins), so the distribution may not name the bucket (a cycle)
        media_hosts = [f"https://*.s3.{Aws.URL_SUFFIX}", f"https://*.s3.{Aws.REGION}.{Aws.URL_SUFFIX}"]
        headers = self._headers(self._csp(api_host, media_hosts))
        cfn = cast(cloudfront.CfnDistribution, self.distribution.node.default_child)
        cfn.add_property_override(
            "DistributionConfig.DefaultCacheBehavior.ResponseHeadersPolicyId", headers.response_headers_policy_id
        )
        config = {
            "api": api.url,
            "cognito": {
                "region": Aws.REGION,
                "userPoolId": self.user_pool.user_pool_id,
                "clientId": self.client.user_pool_client_id,
                "identityPoolId": self.identity_pool.identity_pool_id,
                "domain": self.domain.base_url(),
            },
        }
        s3deploy.BucketDeployment(
            self,
            "Files",
            sources=[s3deploy.Source.asset(str(DIST)), s3deploy.Source.json_data("config.json", config)],
            destination_bucket=self.bucket,  # no invalidation: the distribution caches nothing
            memory_limit=256,
        )
