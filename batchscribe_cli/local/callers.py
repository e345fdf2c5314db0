"""API Gateway's IAM check for the local API's callers: each request is allowed only if a managed
policy its caller holds allows `execute-api:Invoke` on the request's ARN, as deployed. Every
caller holds the invoke policy (the job and model routes: what the deployer attaches to each
caller); the owners named in `LocalConfig.stats_owners` also hold the stats policy (GET
/admin/stats). Both are the policies the CDK stack synthesizes (policies.json `callers`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from batchscribe_cli.local.policies import INVOKE, STATS, Policy, execute_api_arn

ACTION = "execute-api:Invoke"


@dataclass(frozen=True)
class Callers:
    policies: Mapping[str, Policy]
    stats_owners: frozenset[str]

    @classmethod
    def of(cls, policies: Mapping[str, Policy], stats_owners: Iterable[str]) -> Callers:
        missing = {INVOKE, STATS} - set(policies)
        if missing:
            raise RuntimeError(f"policies.json has no caller policy {sorted(missing)}: run `make policies`")
        return cls(policies, frozenset(stats_owners))

    def held(self, owner: str) -> list[str]:
        return [INVOKE, STATS] if owner in self.stats_owners else [INVOKE]

    def denial(self, owner: str, method: str, path: str) -> str | None:
        """None when the caller may make this request; else why not, in AWS's words."""
        arn = execute_api_arn(method, path)
        held = [self.policies[name] for name in self.held(owner)]
        allowed = any(p.allows(ACTION, arn) for p in held) and not any(
            s.effect == "Deny" and s.applies(ACTION, arn) for p in held for s in p.statements
        )
        if allowed:
            return None
        return (
            f"User: {owner} is not authorized to perform: {ACTION} on resource: {arn} (local stack: the caller holds "
            f"the policies {', '.join(p.role for p in held)} the CDK stack synthesizes)"
        )
