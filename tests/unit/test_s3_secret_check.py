"""The S3 credentials Secret is checked by the step pod, not read by the operator: the kubelet's words for a
pod that cannot start become the asset's condition, naming the Secret and the missing key."""

from __future__ import annotations

from kubemam.controllers.asset import s3_problem_from_waiting


def test_the_kubelets_words_become_a_problem_naming_the_secret_and_key() -> None:
    missing_key = [("CreateContainerConfigError", "couldn't find key AWS_SECRET_ACCESS_KEY in Secret media/kubemam-s3")]
    problem = s3_problem_from_waiting("kubemam-s3", "media", missing_key)
    assert problem is not None and problem.startswith("Secret 'kubemam-s3' in namespace media lacks "
                                                      "AWS_SECRET_ACCESS_KEY")
    gone = [("CreateContainerConfigError", 'secret "kubemam-s3" not found')]
    problem = s3_problem_from_waiting("kubemam-s3", "media", gone)
    assert problem is not None and "'kubemam-s3'" in problem and "is not in namespace media" in problem
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in problem


def test_other_waits_and_other_secrets_are_not_the_s3_secrets_problem() -> None:
    for waiting in ([("ContainerCreating", "")], [("ImagePullBackOff", "Back-off pulling image")],
                    [("CreateContainerConfigError", 'secret "cpix-token" not found')],
                    [("CreateContainerConfigError", "couldn't find key token in Secret media/cpix-token")],
                    [("CreateContainerConfigError", "couldn't find key X in Secret other/kubemam-s3")], []):
        assert s3_problem_from_waiting("kubemam-s3", "media", waiting) is None
