"""Who owns a job: the owner is derived from the IAM principal API Gateway authenticated,
from parts of it the caller cannot choose.

- an IAM user `arn:aws:iam::ACCOUNT:user/PATH/NAME`, the account root, or a federated user
  (`arn:aws:sts::ACCOUNT:federated-user/NAME`, named by the IAM user that minted it): the ARN.
- an assumed role `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`: the role,
  `arn:aws:sts::ACCOUNT:assumed-role/ROLE`. The session name is chosen by whoever calls
  AssumeRole, so principals of one role could pose as each other by choosing it; the role is
  the isolation boundary (every session of a role shares its jobs). Give callers who must not
  see each other's jobs their own role (or IAM user).
- an assumed role whose credentials Cognito's identity pool vended (the web console's signed-in
  people, who all share one role): the role and the Cognito identity id,
  `arn:aws:sts::ACCOUNT:assumed-role/ROLE/cognito:REGION:UUID`. API Gateway fills
  `cognitoIdentityId` in from the credentials themselves; the caller cannot choose it.

A request with no principal at all (the API invoked without IAM authorization) has no owner:
`Unauthenticated`, never a default. Only the local stack's HTTP server, the explicit local
mode, makes identities up (from its `X-Batchscribe-Owner` header).
"""

from __future__ import annotations

import re

from batchscribe.errors import Unauthenticated

_ASSUMED_ROLE = re.compile(r"^(arn:[\w-]+:sts::\d{12}:assumed-role/[\w+=,.@-]+)/[\w+=,.@-]+$")
_COGNITO_IDENTITY = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d:[0-9a-f-]{36}$")
_PRINCIPAL = re.compile(r"^arn:[\w-]+:(iam|sts)::\d{12}:[\w+=,.@/-]+$")


def owner_of(user_arn: str | None, cognito_identity_id: str | None = None) -> str:
    """The owner a principal's jobs belong to (see the module's docstring)."""
    if not user_arn:
        raise Unauthenticated("the request carries no IAM identity; sign it with SigV4 (AWS credentials)")
    if not _PRINCIPAL.match(user_arn):
        raise Unauthenticated(f"the request's identity {user_arn!r} is not an IAM principal ARN")
    role = _ASSUMED_ROLE.match(user_arn)
    if role and cognito_identity_id:
        if not _COGNITO_IDENTITY.match(cognito_identity_id):
            raise Unauthenticated(f"the request's Cognito identity {cognito_identity_id!r} is not one")
        return f"{role[1]}/cognito:{cognito_identity_id}"
    return role[1] if role else user_arn
