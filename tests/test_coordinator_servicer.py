"""Servicer tests over a real localhost channel (simulated executor, real store and SQLite)."""

import json

import grpc
import pytest

from coordinator.v1 import coordinator_pb2 as pb
from coordinator.v1 import types_pb2 as t
from tests.fixtures.coordinator import AUTH, task_spec


def _code(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, metadata=AUTH, **kw)
    return err.value.code(), err.value.details()


def test_submit_watch_get_list(coordinator):
    s = coordinator.stub
    ds = coordinator.upload("arith")
    assert ds.train_records == 8 and ds.eval_records == 8
    job = s.SubmitTask(pb.SubmitTaskRequest(spec=task_spec("arith"), request_id="r-1"), metadata=AUTH)
    assert job.state == t.JOB_STATE_QUEUED and job.task == "arith" and job.kind == t.JOB_KIND_TRAIN
    again = s.SubmitTask(pb.SubmitTaskRequest(spec=task_spec("arith"), request_id="r-1"), metadata=AUTH)
    assert again.job_id == job.job_id  # idempotent
    events = list(s.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=AUTH, timeout=30))
    assert [e.index for e in events] == list(range(len(events)))
    assert events[-1].state == t.JOB_STATE_SUCCEEDED
    assert any(e.type == "progress" and e.progress.total_steps == 4 for e in events)
    resumed = list(s.WatchJob(pb.WatchJobRequest(job_id=job.job_id, from_index=len(events) - 2), metadata=AUTH))
    assert [e.index for e in resumed] == [len(events) - 2, len(events) - 1]
    done = s.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=AUTH)
    assert done.state == t.JOB_STATE_SUCCEEDED and done.adapter_id == job.job_id
    assert json.loads(done.spec_json)["lori"]["rank"] == 4
    ad = s.GetAdapter(pb.GetAdapterRequest(adapter_id=done.adapter_id), metadata=AUTH)
    assert ad.task == "arith" and ad.version == 1 and ad.lineage[0].adapter_id == done.adapter_id
    lst = s.ListJobs(pb.ListJobsRequest(states=[t.JOB_STATE_SUCCEEDED]), metadata=AUTH)
    assert [j.job_id for j in lst.jobs] == [job.job_id]
    assert s.ListAdapters(pb.ListAdaptersRequest(family="fam"), metadata=AUTH).adapters[0].adapter_id == job.job_id


def test_pagination_and_cancel(coordinator):
    s = coordinator.stub
    coordinator.upload("copy")
    ids = [s.SubmitTask(pb.SubmitTaskRequest(spec=task_spec("copy")), metadata=AUTH).job_id for _ in range(5)]
    seen, token = [], ""
    while True:
        page = s.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token), metadata=AUTH)
        seen += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    cancelled = s.CancelJob(pb.CancelJobRequest(job_id=ids[-1]), metadata=AUTH)
    final = coordinator.wait_job(cancelled.job_id)
    assert final.state in (t.JOB_STATE_CANCELLED, t.JOB_STATE_SUCCEEDED)
    for i in ids[:-1]:
        coordinator.wait_job(i)


def test_errors_name_fields_and_ids(coordinator):
    s = coordinator.stub
    code, msg = _code(s.GetJob, pb.GetJobRequest(job_id="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg
    code, msg = _code(s.SubmitTask, pb.SubmitTaskRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("spec")
    bad = task_spec("arith")
    bad.lori.rank = 0
    code, msg = _code(s.SubmitTask, pb.SubmitTaskRequest(spec=bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("spec.lori.rank")
    code, msg = _code(s.SubmitTask, pb.SubmitTaskRequest(spec=task_spec("arith", dataset="missing")))
    assert code == grpc.StatusCode.NOT_FOUND and "missing" in msg
    code, msg = _code(s.ListJobs, pb.ListJobsRequest(page_token="garbage!"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("page_token")
    code, msg = _code(s.Merge, pb.MergeRequest(adapter_ids=["a", "b"], method="avg"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("method")
    code, _ = _code(s.Merge, pb.MergeRequest(adapter_ids=["a", "b"]))
    assert code == grpc.StatusCode.NOT_FOUND
    bad_ds = [pb.UploadDatasetRequest(name="x", split=t.DATASET_SPLIT_TRAIN, data=b'{"prompt": 1}\n')]
    code, msg = _code(s.UploadDataset, iter(bad_ds))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "line 1" in msg
    code, msg = _code(s.CreateSchedule, pb.CreateScheduleRequest(name="n", cron="every day", family="fam"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("cron")


def test_merge_export_continual(coordinator, tmp_path):
    s = coordinator.stub
    jobs = []
    for task in ("arith", "copy", "capital"):
        coordinator.upload(task)
        jobs.append(s.SubmitTask(pb.SubmitTaskRequest(spec=task_spec(task)), metadata=AUTH))
    ids = [coordinator.wait_job(j.job_id).adapter_id for j in jobs]
    merged = s.Merge(pb.MergeRequest(adapter_ids=ids, method="auto", task="all", promote_to="production"),
                     metadata=AUTH)
    assert merged.kind == "merge-sum" and list(merged.parents) == ids and merged.pointers == ["production"]
    assert list(merged.tasks) == ["arith", "copy", "capital"]
    same = s.Merge(pb.MergeRequest(adapter_ids=ids, task="all"), metadata=AUTH)
    assert same.adapter_id == merged.adapter_id  # idempotent
    out = s.ExportAdapter(pb.ExportAdapterRequest(adapter_id=merged.adapter_id, destination=str(tmp_path / "peft")),
                          metadata=AUTH)
    assert sorted(out.files) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (tmp_path / "peft" / "adapter_config.json").exists()
    coordinator.upload("reverse")
    spec = task_spec("reverse")
    spec.family = ""
    job = s.ContinualUpdate(pb.ContinualUpdateRequest(base_adapter_id=merged.adapter_id, spec=spec,
                                                      gate=t.Gate(enabled=True, max_drop=1.0),
                                                      promote_to="production"), metadata=AUTH)
    final = coordinator.wait_job(job.job_id)
    assert final.state == t.JOB_STATE_SUCCEEDED, final.error
    result = json.loads(final.result_json)
    assert set(result["before"]) == {"arith", "copy", "capital"} and result["promoted"]
    ad = s.GetAdapter(pb.GetAdapterRequest(adapter_id=final.adapter_id), metadata=AUTH)
    assert list(ad.parents) == [merged.adapter_id] and "production" in ad.pointers
    assert {e.adapter_id for e in ad.lineage} >= set(ids)
