"""Which repositories the service is willing to reach. No DNS: addresses come from an injected resolver."""

from __future__ import annotations

from tests.emulated.support import create


def test_the_api_refuses_a_metadata_url_with_the_spec_body(user) -> None:
    response = create({"repository": "http://169.254.169.254/latest/meta-data/iam"})
    assert response.status == 400
    assert response.body == {
        "status": "error",
        "message": "Repository host '169.254.169.254' is not an allowed git provider host",
        "msg_id": "STATUS$GIT_REPOSITORY_NOT_ALLOWED",
    }
