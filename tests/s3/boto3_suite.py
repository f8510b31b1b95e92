#!/usr/bin/env python3
"""Cairn's S3 gateway, driven by boto3 (the AWS SDK for Python).

Every S3 operation the gateway offers, plus bad input, against a running
gateway. Usage:

    S3_ENDPOINT=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… \
        python3 tests/s3/boto3_suite.py [test-name-substring]

Exits non-zero and names each failed check. Each test uses its own bucket.
"""
import datetime
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import traceback
import urllib.parse
import urllib.request

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["S3_ENDPOINT"]
KEY_ID = os.environ["AWS_ACCESS_KEY_ID"]
SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
RUN = f"{os.getpid():x}"


def client(key_id=KEY_ID, secret=SECRET, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=10,
            read_timeout=120,
            **cfg,
        ),
    )


S3 = client()


def blob(n, seed):
    """n deterministic bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:n])


def code(e):
    return e.response["Error"]["Code"]


def status(e):
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


def expect_error(fn, codes, statuses=None):
    try:
        fn()
    except ClientError as e:
        assert code(e) in codes, f"expected {codes}, got {code(e)}: {e}"
        if statuses:
            assert status(e) in statuses, f"expected HTTP {statuses}, got {status(e)}"
        return e
    raise AssertionError(f"expected an error {codes}, but the call succeeded")


def bucket(name):
    b = f"{name}-{RUN}"
    S3.create_bucket(Bucket=b)
    return b


# ---------------------------------------------------------------- buckets

def test_buckets():
    b = bucket("buckets")
    names = [x["Name"] for x in S3.list_buckets()["Buckets"]]
    assert b in names, names
    S3.head_bucket(Bucket=b)
    loc = S3.get_bucket_location(Bucket=b)
    assert loc.get("LocationConstraint") in (None, "", REGION), loc
    # Creating it again: already yours.
    expect_error(lambda: S3.create_bucket(Bucket=b),
                 {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}, {409})
    # Not empty: refused.
    S3.put_object(Bucket=b, Key="x", Body=b"1")
    expect_error(lambda: S3.delete_bucket(Bucket=b), {"BucketNotEmpty"}, {409})
    S3.delete_object(Bucket=b, Key="x")
    S3.delete_bucket(Bucket=b)
    expect_error(lambda: S3.head_bucket(Bucket=b), {"404", "NoSuchBucket"}, {404})
    assert b not in [x["Name"] for x in S3.list_buckets()["Buckets"]]
    expect_error(lambda: S3.put_object(Bucket=b, Key="y", Body=b"1"), {"NoSuchBucket"}, {404})


def test_invalid_bucket_names():
    for bad in ["a" * 64, "ab", "UPPER", "under_score", "-dash", "a..b", "192.168.1.1"]:
        # boto3 validates some names itself; send the request raw to be sure
        # the gateway answers with an S3 error.
        st, body = raw_signed("PUT", f"/{bad}", b"")
        assert st == 400 and b"InvalidBucketName" in body, (bad, st, body[:300])


# ---------------------------------------------------------------- objects

def test_put_get_head_metadata():
    b = bucket("objects")
    data = blob(300_000, 1)
    r = S3.put_object(Bucket=b, Key="dir/a.bin", Body=data, ContentType="application/x-test",
                      Metadata={"colour": "blue", "n": "7"})
    md5 = hashlib.md5(data).hexdigest()
    assert r["ETag"].strip('"') == md5, (r["ETag"], md5)
    g = S3.get_object(Bucket=b, Key="dir/a.bin")
    assert g["Body"].read() == data
    assert g["ContentLength"] == len(data)
    assert g["ContentType"] == "application/x-test", g["ContentType"]
    assert g["Metadata"] == {"colour": "blue", "n": "7"}, g["Metadata"]
    assert g["ETag"].strip('"') == md5
    h = S3.head_object(Bucket=b, Key="dir/a.bin")
    assert h["ContentLength"] == len(data)
    assert h["ETag"].strip('"') == md5
    age = datetime.datetime.now(datetime.timezone.utc) - h["LastModified"]
    assert abs(age.total_seconds()) < 300, h["LastModified"]
    # Empty object.
    S3.put_object(Bucket=b, Key="empty", Body=b"")
    assert S3.get_object(Bucket=b, Key="empty")["Body"].read() == b""
    assert S3.head_object(Bucket=b, Key="empty")["ETag"].strip('"') == hashlib.md5(b"").hexdigest()
    # Overwrite: the new bytes win.
    S3.put_object(Bucket=b, Key="dir/a.bin", Body=b"second")
    assert S3.get_object(Bucket=b, Key="dir/a.bin")["Body"].read() == b"second"
    # Missing key.
    expect_error(lambda: S3.get_object(Bucket=b, Key="nope"), {"NoSuchKey"}, {404})
    expect_error(lambda: S3.head_object(Bucket=b, Key="nope"), {"404", "NoSuchKey"}, {404})
    # Conditional writes: create only (If-None-Match: *), replace only the
    # ETag read (If-Match).
    S3.put_object(Bucket=b, Key="once", Body=b"first", IfNoneMatch="*")
    expect_error(lambda: S3.put_object(Bucket=b, Key="once", Body=b"again", IfNoneMatch="*"),
                 {"PreconditionFailed"}, {412})
    tag = S3.head_object(Bucket=b, Key="once")["ETag"]
    expect_error(lambda: S3.put_object(Bucket=b, Key="once", Body=b"x", IfMatch='"' + "0" * 32 + '"'),
                 {"PreconditionFailed"}, {412})
    S3.put_object(Bucket=b, Key="once", Body=b"second", IfMatch=tag)
    assert S3.get_object(Bucket=b, Key="once")["Body"].read() == b"second"


def test_tagging():
    b = bucket("tagging")
    S3.put_object(Bucket=b, Key="t", Body=b"tagged", Tagging="project=cairn&team=storage%20core")
    tags = S3.get_object_tagging(Bucket=b, Key="t")["TagSet"]
    assert tags == [{"Key": "project", "Value": "cairn"}, {"Key": "team", "Value": "storage core"}], tags
    assert S3.get_object(Bucket=b, Key="t")["TagCount"] == 2
    S3.put_object_tagging(Bucket=b, Key="t", Tagging={"TagSet": [{"Key": "x", "Value": "y"}]})
    assert S3.get_object_tagging(Bucket=b, Key="t")["TagSet"] == [{"Key": "x", "Value": "y"}]
    # A copy keeps the source's tags unless it replaces them.
    S3.copy_object(Bucket=b, Key="kept", CopySource={"Bucket": b, "Key": "t"})
    assert S3.get_object_tagging(Bucket=b, Key="kept")["TagSet"] == [{"Key": "x", "Value": "y"}]
    S3.copy_object(Bucket=b, Key="replaced", CopySource={"Bucket": b, "Key": "t"},
                   TaggingDirective="REPLACE", Tagging="k=v")
    assert S3.get_object_tagging(Bucket=b, Key="replaced")["TagSet"] == [{"Key": "k", "Value": "v"}]
    # A new PUT of the key starts without the old tags.
    S3.put_object(Bucket=b, Key="t", Body=b"new")
    assert S3.get_object_tagging(Bucket=b, Key="t")["TagSet"] == []
    S3.put_object_tagging(Bucket=b, Key="t", Tagging={"TagSet": [{"Key": "n", "Value": "1"}]})
    S3.delete_object_tagging(Bucket=b, Key="t")
    assert S3.get_object_tagging(Bucket=b, Key="t")["TagSet"] == []
    eleven = {"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]}
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="t", Tagging=eleven), {"InvalidTag"}, {400})
    # Refused before its body is read; on its own connection (a CI run once
    # saw the next request on a shared connection fail its signature).
    expect_error(lambda: client().put_object(Bucket=b, Key="dup", Body=b"x", Tagging="a=1&a=2"),
                 {"InvalidTag"}, {400})
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="ghost", Tagging={"TagSet": []}),
                 {"NoSuchKey"}, {404})
    # Multipart: the upload's tags become the object's.
    up = S3.create_multipart_upload(Bucket=b, Key="mpu", Tagging="stage=final")["UploadId"]
    e = S3.upload_part(Bucket=b, Key="mpu", UploadId=up, PartNumber=1, Body=b"only part")["ETag"]
    S3.complete_multipart_upload(Bucket=b, Key="mpu", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert S3.get_object_tagging(Bucket=b, Key="mpu")["TagSet"] == [{"Key": "stage", "Value": "final"}]


def test_bucket_tagging():
    b = bucket("buckettags")
    expect_error(lambda: S3.get_bucket_tagging(Bucket=b), {"NoSuchTagSet"}, {404})
    S3.put_bucket_tagging(Bucket=b, Tagging={"TagSet": [{"Key": "env", "Value": "prod"},
                                                        {"Key": "team", "Value": "storage core"}]})
    assert S3.get_bucket_tagging(Bucket=b)["TagSet"] == [{"Key": "env", "Value": "prod"},
                                                        {"Key": "team", "Value": "storage core"}]
    S3.put_bucket_tagging(Bucket=b, Tagging={"TagSet": [{"Key": "env", "Value": "test"}]})
    assert S3.get_bucket_tagging(Bucket=b)["TagSet"] == [{"Key": "env", "Value": "test"}]
    many = {"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}
    expect_error(lambda: S3.put_bucket_tagging(Bucket=b, Tagging=many), {"InvalidTag"}, {400})
    S3.delete_bucket_tagging(Bucket=b)
    expect_error(lambda: S3.get_bucket_tagging(Bucket=b), {"NoSuchTagSet"}, {404})
    expect_error(lambda: S3.get_bucket_tagging(Bucket="no-such-bucket-here"), {"NoSuchBucket"}, {404})


def preflight(b, origin, method, headers=None):
    """A browser's CORS preflight for bucket b: (status, lower-cased headers)."""
    u = urllib.parse.urlsplit(ENDPOINT)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    conn.request("OPTIONS", f"/{b}/some/key", headers=h)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}


def test_cors():
    b = bucket("cors")
    expect_error(lambda: S3.get_bucket_cors(Bucket=b), {"NoSuchCORSConfiguration"}, {404})
    assert preflight(b, "https://app.example.com", "PUT")[0] == 403, "no rules, no cross-origin use"
    rules = [
        {"ID": "app", "AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["PUT", "GET"],
         "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
        {"AllowedOrigins": ["https://*.cdn.example.com"], "AllowedMethods": ["GET"]},
    ]
    S3.put_bucket_cors(Bucket=b, CORSConfiguration={"CORSRules": rules})
    got = S3.get_bucket_cors(Bucket=b)["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://app.example.com"] and got[0]["MaxAgeSeconds"] == 600, got
    assert got[1]["AllowedMethods"] == ["GET"], got
    # An allowed preflight is answered with the rule's headers.
    st, h = preflight(b, "https://app.example.com", "PUT", "content-type, x-amz-date")
    assert st == 200, (st, h)
    assert h["access-control-allow-origin"] == "https://app.example.com", h
    assert "PUT" in h["access-control-allow-methods"], h
    assert h["access-control-allow-headers"] == "content-type, x-amz-date", h
    assert h["access-control-max-age"] == "600", h
    # A wildcard origin allows GET but not PUT, and asks for no headers.
    assert preflight(b, "https://eu.cdn.example.com", "GET")[0] == 200
    assert preflight(b, "https://eu.cdn.example.com", "PUT")[0] == 403
    assert preflight(b, "https://eu.cdn.example.com", "GET", "x-custom")[0] == 403
    assert preflight(b, "https://evil.example.org", "GET")[0] == 403
    # A signed request from an allowed origin gets the headers a page needs.
    S3.put_object(Bucket=b, Key="k", Body=b"cross-origin")
    url = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "k"}, ExpiresIn=300)
    req = urllib.request.Request(url, headers={"Origin": "https://app.example.com"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.read() == b"cross-origin"
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com", dict(r.headers)
        assert r.headers["Access-Control-Expose-Headers"] == "ETag", dict(r.headers)
    req = urllib.request.Request(url, headers={"Origin": "https://evil.example.org"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.read() == b"cross-origin"
        assert r.headers["Access-Control-Allow-Origin"] is None, dict(r.headers)
    bad = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
    expect_error(lambda: S3.put_bucket_cors(Bucket=b, CORSConfiguration=bad), {"InvalidArgument"}, {400})
    S3.delete_bucket_cors(Bucket=b)
    expect_error(lambda: S3.get_bucket_cors(Bucket=b), {"NoSuchCORSConfiguration"}, {404})
    assert preflight(b, "https://app.example.com", "PUT")[0] == 403


def test_lifecycle_configuration():
    b = bucket("lifecycle")
    expect_error(lambda: S3.get_bucket_lifecycle_configuration(Bucket=b),
                 {"NoSuchLifecycleConfiguration"}, {404})
    rules = [
        {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}},
        {"ID": "uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
        {"ID": "tmp", "Status": "Disabled",
         "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "temp", "Value": "yes"}]}},
         "Expiration": {"Days": 1}},
        {"ID": "big", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 1048576},
         "Expiration": {"Days": 90}},
        {"ID": "mid", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "m/", "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 100}},
         "Expiration": {"Days": 5}},
    ]
    S3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
    got = S3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert [r["ID"] for r in got] == ["logs", "uploads", "tmp", "big", "mid"], got
    assert got[3]["Filter"]["ObjectSizeGreaterThan"] == 1048576, got
    assert got[4]["Filter"]["And"] == {"Prefix": "m/", "ObjectSizeGreaterThan": 10,
                                       "ObjectSizeLessThan": 100}, got
    empty = [{"ID": "e", "Status": "Enabled",
              "Filter": {"And": {"ObjectSizeGreaterThan": 100, "ObjectSizeLessThan": 100}},
              "Expiration": {"Days": 1}}]
    expect_error(lambda: S3.put_bucket_lifecycle_configuration(
        Bucket=b, LifecycleConfiguration={"Rules": empty}), {"InvalidArgument"}, {400})
    assert got[0]["Expiration"]["Days"] == 30 and got[0]["Filter"]["Prefix"] == "logs/", got
    assert got[1]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7, got
    assert got[2]["Status"] == "Disabled" and got[2]["Filter"]["And"]["Tags"][0]["Key"] == "temp", got
    glacier = [{"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": ""},
                "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}]
    expect_error(lambda: S3.put_bucket_lifecycle_configuration(
        Bucket=b, LifecycleConfiguration={"Rules": glacier}), {"NotImplemented"}, {501})
    zero = [{"ID": "z", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 0}}]
    expect_error(lambda: S3.put_bucket_lifecycle_configuration(
        Bucket=b, LifecycleConfiguration={"Rules": zero}), {"InvalidArgument"}, {400})
    assert len(S3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]) == 5, "refused sets change nothing"
    S3.delete_bucket_lifecycle(Bucket=b)
    expect_error(lambda: S3.get_bucket_lifecycle_configuration(Bucket=b),
                 {"NoSuchLifecycleConfiguration"}, {404})


def test_bucket_policy():
    import json
    b = bucket("policy")
    S3.put_object(Bucket=b, Key="public/page.html", Body=b"<h1>hello</h1>")
    S3.put_object(Bucket=b, Key="private/notes.txt", Body=b"secret")
    S3.put_object(Bucket=b, Key="keep/me", Body=b"kept")
    anon = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                        config=Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))
    expect_error(lambda: anon.get_object(Bucket=b, Key="public/page.html"), {"AccessDenied"}, {403})
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{b}/public/*"},
        {"Sid": "Keep", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{b}/keep/*"},
    ]}
    expect_error(lambda: S3.get_bucket_policy_status(Bucket=b), {"NoSuchBucketPolicy"}, {404})
    S3.put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
    assert json.loads(S3.get_bucket_policy(Bucket=b)["Policy"]) == policy
    assert S3.get_bucket_policy_status(Bucket=b)["PolicyStatus"]["IsPublic"] is True
    # Anyone may read what the policy makes public, and nothing else.
    assert anon.get_object(Bucket=b, Key="public/page.html")["Body"].read() == b"<h1>hello</h1>"
    with urllib.request.urlopen(f"{ENDPOINT}/{b}/public/page.html", timeout=30) as r:
        assert r.read() == b"<h1>hello</h1>"
    expect_error(lambda: anon.get_object(Bucket=b, Key="private/notes.txt"), {"AccessDenied"}, {403})
    expect_error(lambda: anon.put_object(Bucket=b, Key="public/x", Body=b"x"), {"AccessDenied"}, {403})
    expect_error(lambda: anon.list_objects_v2(Bucket=b), {"AccessDenied"}, {403})
    # A deny binds the account's own keys too, one key or a batch.
    expect_error(lambda: S3.delete_object(Bucket=b, Key="keep/me"), {"AccessDenied"}, {403})
    expect_error(lambda: S3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "private/notes.txt"}]}),
                 {"AccessDenied"}, {403})
    assert S3.get_object(Bucket=b, Key="keep/me")["Body"].read() == b"kept"
    S3.delete_object(Bucket=b, Key="private/notes.txt")
    # A documented key no Cairn request has (no organizations) is accepted
    # and missing, as AWS treats a key a request lacks: the grant applies to
    # no one. A misspelt key is refused, not stored.
    org = dict(policy, Statement=[dict(policy["Statement"][0],
                                       Condition={"StringEquals": {"aws:PrincipalOrgID": "o-1"}})])
    S3.put_bucket_policy(Bucket=b, Policy=json.dumps(org))
    expect_error(lambda: anon.get_object(Bucket=b, Key="public/page.html"), {"AccessDenied"}, {403})
    S3.put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
    typo = dict(policy, Statement=[dict(policy["Statement"][0],
                                        Condition={"StringEquals": {"aws:PrincipleOrgID": "o-1"}})])
    expect_error(lambda: S3.put_bucket_policy(Bucket=b, Policy=json.dumps(typo)), {"MalformedPolicy"}, {400})
    elsewhere = dict(policy, Statement=[dict(policy["Statement"][0], Resource="arn:aws:s3:::other/*")])
    expect_error(lambda: S3.put_bucket_policy(Bucket=b, Policy=json.dumps(elsewhere)), {"MalformedPolicy"}, {400})
    assert json.loads(S3.get_bucket_policy(Bucket=b)["Policy"]) == policy
    expect_error(lambda: anon.get_bucket_policy(Bucket=b), {"AccessDenied"}, {403})
    S3.delete_bucket_policy(Bucket=b)
    expect_error(lambda: anon.get_object(Bucket=b, Key="public/page.html"), {"AccessDenied"}, {403})
    S3.delete_object(Bucket=b, Key="keep/me")


def test_bucket_policy_conditions_and_not_elements():
    import json
    b = bucket("conditions")
    S3.put_object(Bucket=b, Key="docs/a.txt", Body=b"a")
    S3.put_object(Bucket=b, Key="logs/1", Body=b"1")
    anon = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                        config=Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))
    arn = f"arn:aws:s3:::{b}"

    def put(statements):
        S3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))

    # Reads for everyone, but only from the loopback network (the suite's
    # address), and listings only under docs/.
    put([{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*",
          "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}},
         {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": arn,
          "Condition": {"StringLike": {"s3:prefix": "docs/*"}}}])
    assert anon.get_object(Bucket=b, Key="docs/a.txt")["Body"].read() == b"a"
    # (the listing grant is public: any address may use it)
    assert S3.get_bucket_policy_status(Bucket=b)["PolicyStatus"]["IsPublic"] is True
    keys = [o["Key"] for o in anon.list_objects_v2(Bucket=b, Prefix="docs/")["Contents"]]
    assert keys == ["docs/a.txt"], keys
    expect_error(lambda: anon.list_objects_v2(Bucket=b, Prefix="logs/"), {"AccessDenied"}, {403})
    expect_error(lambda: anon.list_objects_v2(Bucket=b), {"AccessDenied"}, {403})
    # The same grant for another network gives this client nothing.
    put([{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*",
          "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}])
    expect_error(lambda: anon.get_object(Bucket=b, Key="docs/a.txt"), {"AccessDenied"}, {403})
    # A grant to fixed addresses only is not public (as S3 says).
    assert S3.get_bucket_policy_status(Bucket=b)["PolicyStatus"]["IsPublic"] is False
    # A deny on a condition binds the account's keys: no writes over plain
    # HTTP, and only signed ones (not presigned URLs) may read.
    put([{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"{arn}/*",
          "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
         {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*",
          "Condition": {"StringEquals": {"s3:authType": "REST-QUERY-STRING"}}}])
    expect_error(lambda: S3.put_object(Bucket=b, Key="docs/b.txt", Body=b"b"), {"AccessDenied"}, {403})
    assert S3.get_object(Bucket=b, Key="docs/a.txt")["Body"].read() == b"a"
    url = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "docs/a.txt"}, ExpiresIn=60)
    try:
        urllib.request.urlopen(url, timeout=30)
        raise AssertionError("a presigned GET got through a deny on s3:authType")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
    # NotPrincipal / NotAction / NotResource: everyone but this key is denied
    # everything but reads, outside logs/.
    put([{"Effect": "Deny", "NotPrincipal": {"AWS": KEY_ID}, "NotAction": "s3:GetObject",
          "NotResource": f"{arn}/logs/*"},
         {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*"}])
    S3.put_object(Bucket=b, Key="docs/c.txt", Body=b"c")
    assert anon.get_object(Bucket=b, Key="docs/c.txt")["Body"].read() == b"c"
    expect_error(lambda: anon.put_object(Bucket=b, Key="docs/d", Body=b"d"), {"AccessDenied"}, {403})
    # Policy variables, filled in from each request: a home directory per
    # key (${aws:username} is the signing access key id), and anonymous
    # readers only under home/Anonymous/ (${aws:principaltype}).
    S3.delete_bucket_policy(Bucket=b)
    S3.put_object(Bucket=b, Key="home/Anonymous/readme", Body=b"hello")
    put([{"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"],
          "NotResource": f"{arn}/home/${{aws:username}}/*"},
         {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
          "Resource": f"{arn}/home/${{aws:principaltype}}/*"}])
    S3.put_object(Bucket=b, Key=f"home/{KEY_ID}/notes", Body=b"mine")
    expect_error(lambda: S3.put_object(Bucket=b, Key="home/someone-else/notes", Body=b"x"), {"AccessDenied"}, {403})
    expect_error(lambda: S3.put_object(Bucket=b, Key="docs/e", Body=b"e"), {"AccessDenied"}, {403})
    assert anon.get_object(Bucket=b, Key="home/Anonymous/readme")["Body"].read() == b"hello"
    expect_error(lambda: anon.get_object(Bucket=b, Key=f"home/{KEY_ID}/notes"), {"AccessDenied"}, {403})
    expect_error(lambda: anon.put_object(Bucket=b, Key="home/Anonymous/x", Body=b"x"), {"AccessDenied"}, {403})
    S3.delete_object(Bucket=b, Key=f"home/{KEY_ID}/notes")
    # Object tags: no reading objects tagged secret (by the tags they have
    # now), and no writes without team=storage in x-amz-tagging.
    S3.delete_bucket_policy(Bucket=b)
    S3.put_object(Bucket=b, Key="tags/secret", Body=b"s", Tagging="classification=secret")
    S3.put_object(Bucket=b, Key="tags/public", Body=b"p", Tagging="classification=public")
    put([{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/tags/*",
          "Condition": {"StringEquals": {"s3:ExistingObjectTag/classification": "secret"}}},
         {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"{arn}/tags/*",
          "Condition": {"StringNotEquals": {"s3:RequestObjectTag/team": "storage"}}}])
    expect_error(lambda: S3.get_object(Bucket=b, Key="tags/secret"), {"AccessDenied"}, {403})
    assert S3.get_object(Bucket=b, Key="tags/public")["Body"].read() == b"p"
    S3.put_object_tagging(Bucket=b, Key="tags/public",
                          Tagging={"TagSet": [{"Key": "classification", "Value": "secret"}]})
    expect_error(lambda: S3.get_object(Bucket=b, Key="tags/public"), {"AccessDenied"}, {403})
    expect_error(lambda: S3.put_object(Bucket=b, Key="tags/new", Body=b"n"), {"AccessDenied"}, {403})
    S3.put_object(Bucket=b, Key="tags/new", Body=b"n", Tagging="team=storage&x=a%20b")
    # PutObjectTagging's own tags (its XML body) are request tags too: a
    # deny on them refuses it, by version id too; an allow on them lets
    # anyone set them.
    put([{"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObjectTagging", "s3:PutObjectVersionTagging"],
          "Resource": f"{arn}/tags/*",
          "Condition": {"StringEquals": {"s3:RequestObjectTag/classification": "secret"}}},
         {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObjectTagging", "Resource": f"{arn}/tags/*",
          "Condition": {"StringEquals": {"s3:RequestObjectTag/classification": "public"}}}])
    secret = {"TagSet": [{"Key": "classification", "Value": "secret"}]}
    public = {"TagSet": [{"Key": "classification", "Value": "public"}]}
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="tags/new", Tagging=secret), {"AccessDenied"}, {403})
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="tags/new", VersionId="null", Tagging=secret),
                 {"AccessDenied"}, {403})
    S3.put_object_tagging(Bucket=b, Key="tags/new", Tagging={"TagSet": [{"Key": "team", "Value": "storage"}]})
    anon.put_object_tagging(Bucket=b, Key="tags/new", Tagging=public)
    assert S3.get_object_tagging(Bucket=b, Key="tags/new")["TagSet"] == public["TagSet"]
    expect_error(lambda: anon.put_object_tagging(Bucket=b, Key="tags/new", Tagging={"TagSet": []}),
                 {"AccessDenied"}, {403})
    S3.delete_bucket_policy(Bucket=b)
    for k in ["tags/secret", "tags/public", "tags/new"]:
        S3.delete_object(Bucket=b, Key=k)
    for k in ["docs/a.txt", "docs/c.txt", "logs/1", "home/Anonymous/readme"]:
        S3.delete_object(Bucket=b, Key=k)


def web_get(b, path, method="GET", headers=None):
    """A browser's request for `path` of bucket b's website: host b.web.localhost."""
    u = urllib.parse.urlparse(ENDPOINT)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request(method, path, headers={"Host": f"{b}.web.localhost:{u.port}", **(headers or {})})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_website_hosting():
    import json
    b = bucket("site")
    html = {"ContentType": "text/html"}
    S3.put_object(Bucket=b, Key="index.html", Body=b"<h1>home</h1>", **html)
    S3.put_object(Bucket=b, Key="docs/index.html", Body=b"<h1>docs</h1>", **html)
    S3.put_object(Bucket=b, Key="style.css", Body=b"h1{}", ContentType="text/css")
    S3.put_object(Bucket=b, Key="404.html", Body=b"<h1>lost</h1>", **html)
    S3.put_object(Bucket=b, Key="private/x", Body=b"x")
    expect_error(lambda: S3.get_bucket_website(Bucket=b), {"NoSuchWebsiteConfiguration"}, {404})
    assert web_get(b, "/")[0] == 404, "no website configuration yet"
    # S3's own checks: an index document is required, with no slash.
    expect_error(lambda: S3.put_bucket_website(Bucket=b, WebsiteConfiguration={
        "ErrorDocument": {"Key": "404.html"}}), {"InvalidArgument"}, {400})
    expect_error(lambda: S3.put_bucket_website(Bucket=b, WebsiteConfiguration={
        "IndexDocument": {"Suffix": "a/index.html"}}), {"InvalidArgument"}, {400})
    config = {"IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "404.html"},
              "RoutingRules": [{"Condition": {"KeyPrefixEquals": "old/"},
                                "Redirect": {"ReplaceKeyPrefixWith": "docs/"}}]}
    S3.put_bucket_website(Bucket=b, WebsiteConfiguration=config)
    got = S3.get_bucket_website(Bucket=b)
    assert got["IndexDocument"] == {"Suffix": "index.html"}, got
    assert got["ErrorDocument"] == {"Key": "404.html"}, got
    assert got["RoutingRules"][0]["Redirect"]["ReplaceKeyPrefixWith"] == "docs/", got
    # Like S3's website endpoints, it serves only what everyone may read.
    assert web_get(b, "/")[0] == 403
    # (the time condition: website reads see the same condition keys as S3 requests)
    S3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{b}/*",
         "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{b}/private/*"}]}))
    status, headers, body = web_get(b, "/")
    assert (status, body) == (200, b"<h1>home</h1>"), (status, body)
    assert headers["content-type"] == "text/html", headers
    assert web_get(b, "/docs/")[2] == b"<h1>docs</h1>"
    status, headers, body = web_get(b, "/style.css")
    assert (status, headers["content-type"], body) == (200, "text/css", b"h1{}")
    status, headers, _ = web_get(b, "/docs")
    assert (status, headers["location"]) == (302, "/docs/"), (status, headers)
    status, headers, body = web_get(b, "/nothing/here.html")
    assert (status, body) == (404, b"<h1>lost</h1>"), (status, body)
    assert web_get(b, "/private/x")[0] == 403
    status, headers, _ = web_get(b, "/old/index.html")
    port = urllib.parse.urlparse(ENDPOINT).port
    assert (status, headers["location"]) == (301, f"http://{b}.web.localhost:{port}/docs/index.html"), headers
    # A browser's revalidation, and a media player's range.
    etag = web_get(b, "/style.css")[1]["etag"]
    status, _, body = web_get(b, "/style.css", headers={"If-None-Match": etag})
    assert (status, body) == (304, b""), (status, body)
    assert web_get(b, "/style.css", headers={"If-None-Match": '"other"'})[2] == b"h1{}"
    status, headers, body = web_get(b, "/style.css", headers={"Range": "bytes=1-2"})
    assert (status, body, headers["content-range"]) == (206, b"1{", "bytes 1-2/4"), (status, headers)
    assert web_get(b, "/style.css", headers={"Range": "bytes=9-"})[0] == 416
    status, headers, body = web_get(b, "/", "HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "13"), (status, headers)
    assert web_get(b, "/", "DELETE")[0] == 405
    assert S3.get_object(Bucket=b, Key="index.html")["Body"].read() == b"<h1>home</h1>", "S3 untouched"
    # Everything elsewhere.
    S3.put_bucket_website(Bucket=b, WebsiteConfiguration={
        "RedirectAllRequestsTo": {"HostName": "example.com", "Protocol": "https"}})
    status, headers, _ = web_get(b, "/a/b")
    assert (status, headers["location"]) == (301, "https://example.com/a/b"), headers
    S3.delete_bucket_website(Bucket=b)
    assert web_get(b, "/")[0] == 404
    expect_error(lambda: S3.get_bucket_website(Bucket=b), {"NoSuchWebsiteConfiguration"}, {404})
    S3.delete_bucket_policy(Bucket=b)
    for k in ["index.html", "docs/index.html", "style.css", "404.html", "private/x"]:
        S3.delete_object(Bucket=b, Key=k)


def test_acls_versioning_policies_and_encryption():
    b = bucket("settings")
    S3.put_object(Bucket=b, Key="o", Body=b"x")
    # ACLs are S3's bucket-owner-enforced mode: the account owns everything.
    for acl in (S3.get_bucket_acl(Bucket=b), S3.get_object_acl(Bucket=b, Key="o")):
        grants = acl["Grants"]
        assert len(grants) == 1 and grants[0]["Permission"] == "FULL_CONTROL", grants
        assert grants[0]["Grantee"]["ID"] == acl["Owner"]["ID"], acl
    S3.put_bucket_acl(Bucket=b, ACL="private")
    S3.put_object_acl(Bucket=b, Key="o", ACL="private")
    S3.put_object(Bucket=b, Key="p", Body=b"x", ACL="bucket-owner-full-control")
    expect_error(lambda: S3.put_bucket_acl(Bucket=b, ACL="public-read"), {"AccessControlListNotSupported"}, {400})
    expect_error(lambda: S3.put_object_acl(Bucket=b, Key="o", ACL="public-read"),
                 {"AccessControlListNotSupported"}, {400})
    expect_error(lambda: S3.put_object(Bucket=b, Key="public", Body=b"x", ACL="public-read"),
                 {"AccessControlListNotSupported"}, {400})
    expect_error(lambda: S3.head_object(Bucket=b, Key="public"), {"404", "NoSuchKey"}, {404})
    rules = S3.get_bucket_ownership_controls(Bucket=b)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}], rules
    # Versioning is off until turned on (see test_versioning).
    v = S3.get_bucket_versioning(Bucket=b)
    assert "Status" not in v, v
    expect_error(lambda: S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Sideways"}),
                 {"MalformedXML"}, {400})
    # No bucket policy until one is set (see test_bucket_policy).
    expect_error(lambda: S3.get_bucket_policy(Bucket=b), {"NoSuchBucketPolicy"}, {404})
    expect_error(lambda: S3.put_bucket_policy(Bucket=b, Policy='{"Version": "2012-10-17", "Statement": []}'),
                 {"MalformedPolicy"}, {400})
    S3.delete_bucket_policy(Bucket=b)
    # Every object is encrypted (AES-256-GCM by the node).
    enc = S3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", enc
    S3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    expect_error(lambda: S3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms:dsse"}}]}),
        {"NotImplemented"}, {501})
    r = S3.put_object(Bucket=b, Key="sse", Body=b"secret", ServerSideEncryption="AES256")
    assert r["ServerSideEncryption"] == "AES256", r
    assert S3.head_object(Bucket=b, Key="sse")["ServerSideEncryption"] == "AES256"
    assert S3.get_object(Bucket=b, Key="sse")["ServerSideEncryption"] == "AES256"
    # SSE-KMS: aws:kms without a key id uses the account's alias/aws/s3,
    # made on first use; the gateway holds the keys (cairn gateway kms).
    r = S3.put_object(Bucket=b, Key="kms", Body=b"kms secret", ServerSideEncryption="aws:kms")
    assert r["ServerSideEncryption"] == "aws:kms" and ":key/" in r["SSEKMSKeyId"], r
    default_arn = r["SSEKMSKeyId"]
    g = S3.get_object(Bucket=b, Key="kms")
    assert g["Body"].read() == b"kms secret" and g["SSEKMSKeyId"] == default_arn, g
    assert S3.head_object(Bucket=b, Key="kms")["ServerSideEncryption"] == "aws:kms"
    r = S3.put_object(Bucket=b, Key="kms2", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/aws/s3")
    assert r["SSEKMSKeyId"] == default_arn, r
    expect_error(lambda: S3.put_object(Bucket=b, Key="nokey", Body=b"x", ServerSideEncryption="aws:kms",
                                       SSEKMSKeyId="00000000-0000-4000-8000-000000000000"),
                 {"KMS.NotFoundException"}, {400})
    expect_error(lambda: S3.put_object(Bucket=b, Key="dsse", Body=b"x", ServerSideEncryption="aws:kms:dsse"),
                 {"NotImplemented"}, {501})
    # A bucket default of aws:kms seals the objects that name no encryption.
    S3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    enc = S3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms", enc
    r = S3.put_object(Bucket=b, Key="by-default", Body=b"by default")
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"] == default_arn, r
    assert S3.get_object(Bucket=b, Key="by-default")["Body"].read() == b"by default"
    S3.delete_bucket_encryption(Bucket=b)
    enc = S3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", enc
    assert "SSEKMSKeyId" not in S3.put_object(Bucket=b, Key="plain", Body=b"x")
    # boto3 refuses to send SSE-C over plain HTTP, so the customer-key
    # refusal is covered by the gateway's unit tests.
    for o in (S3.get_bucket_versioning, S3.get_bucket_acl, S3.get_bucket_encryption):
        expect_error(lambda o=o: o(Bucket=f"missing-{RUN}"), {"NoSuchBucket"}, {404})


def test_versioning():
    b = bucket("versions")
    S3.put_object(Bucket=b, Key="doc", Body=b"v0")
    S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    assert S3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    v1 = S3.put_object(Bucket=b, Key="doc", Body=b"v1")["VersionId"]
    big = blob(300_000, 7)
    v2 = S3.put_object(Bucket=b, Key="doc", Body=big)["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2)
    got = S3.get_object(Bucket=b, Key="doc")
    assert got["Body"].read() == big and got["VersionId"] == v2
    assert S3.get_object(Bucket=b, Key="doc", VersionId=v1)["Body"].read() == b"v1"
    assert S3.get_object(Bucket=b, Key="doc", VersionId="null")["Body"].read() == b"v0"
    assert S3.head_object(Bucket=b, Key="doc", VersionId=v1)["ContentLength"] == 2
    r = S3.get_object(Bucket=b, Key="doc", VersionId=v2, Range="bytes=-10")
    assert r["Body"].read() == big[-10:]
    # Reading or tagging a version by id is its own policy action, as in S3.
    S3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": ["s3:GetObjectVersion", "s3:PutObjectVersionTagging"],
        "Resource": f"arn:aws:s3:::{b}/*"}]}))
    expect_error(lambda: S3.get_object(Bucket=b, Key="doc", VersionId=v1), {"AccessDenied"}, {403})
    assert S3.get_object(Bucket=b, Key="doc")["Body"].read() == big
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="doc", VersionId=v1, Tagging={"TagSet": []}),
                 {"AccessDenied"}, {403})
    S3.delete_bucket_policy(Bucket=b)
    # Tags by version id: a noncurrent version's change, the current one's do not.
    old = {"TagSet": [{"Key": "state", "Value": "old"}]}
    assert S3.put_object_tagging(Bucket=b, Key="doc", VersionId=v1, Tagging=old)["VersionId"] == v1
    t = S3.get_object_tagging(Bucket=b, Key="doc", VersionId=v1)
    assert t["TagSet"] == old["TagSet"] and t["VersionId"] == v1, t
    assert S3.get_object_tagging(Bucket=b, Key="doc")["TagSet"] == []
    assert S3.get_object(Bucket=b, Key="doc", VersionId=v1)["TagCount"] == 1
    S3.put_object_tagging(Bucket=b, Key="doc", VersionId="null", Tagging=old)
    assert S3.get_object_tagging(Bucket=b, Key="doc", VersionId="null")["TagSet"] == old["TagSet"]
    assert S3.delete_object_tagging(Bucket=b, Key="doc", VersionId=v1)["VersionId"] == v1
    assert S3.get_object_tagging(Bucket=b, Key="doc", VersionId=v1)["TagSet"] == []
    assert S3.get_object_tagging(Bucket=b, Key="doc", VersionId="null")["TagSet"] == old["TagSet"]
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="doc", VersionId="0" * 24, Tagging=old),
                 {"NoSuchVersion"}, {404})
    # A delete makes a marker; the versions stay readable by id.
    d = S3.delete_object(Bucket=b, Key="doc")
    assert d["DeleteMarker"] is True, d
    marker = d["VersionId"]
    expect_error(lambda: S3.get_object(Bucket=b, Key="doc"), {"NoSuchKey"}, {404})
    expect_error(lambda: S3.get_object(Bucket=b, Key="doc", VersionId=marker), {"MethodNotAllowed"}, {405})
    expect_error(lambda: S3.get_object_tagging(Bucket=b, Key="doc", VersionId=marker), {"MethodNotAllowed"}, {405})
    expect_error(lambda: S3.put_object_tagging(Bucket=b, Key="doc", VersionId=marker, Tagging={"TagSet": []}),
                 {"MethodNotAllowed"}, {405})
    expect_error(lambda: S3.get_object(Bucket=b, Key="doc", VersionId="0" * 24), {"NoSuchVersion"}, {404})
    assert "Contents" not in S3.list_objects_v2(Bucket=b)
    lv = S3.list_object_versions(Bucket=b)
    got = [(v["VersionId"], v["IsLatest"]) for v in lv["Versions"]]
    assert got == [(v2, False), (v1, False), ("null", False)], got
    assert [(m["VersionId"], m["IsLatest"]) for m in lv["DeleteMarkers"]] == [(marker, True)], lv
    expect_error(lambda: S3.delete_bucket(Bucket=b), {"BucketNotEmpty"}, {409})
    # Pages of one, continued with key and version-id markers.
    seen = []
    for page in S3.get_paginator("list_object_versions").paginate(Bucket=b, PaginationConfig={"PageSize": 1}):
        seen += [v["VersionId"] for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    assert sorted(seen) == sorted([marker, v2, v1, "null"]), seen
    # Removing the marker restores the object; removing a version by id
    # makes the one before current.
    S3.delete_object(Bucket=b, Key="doc", VersionId=marker)
    assert S3.get_object(Bucket=b, Key="doc")["Body"].read() == big
    S3.delete_object(Bucket=b, Key="doc", VersionId=v2)
    assert S3.get_object(Bucket=b, Key="doc")["Body"].read() == b"v1"
    # Copying an old version, and a batch delete by version id.
    c = S3.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "doc", "VersionId": "null"})
    assert c["CopySourceVersionId"] == "null" and c["VersionId"], c
    assert S3.get_object(Bucket=b, Key="copy")["Body"].read() == b"v0"
    # Lifecycle rules for noncurrent versions and lone delete markers.
    S3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "old", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 30, "NewerNoncurrentVersions": 3}},
        {"ID": "markers", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
         "Expiration": {"ExpiredObjectDeleteMarker": True}}]})
    got = S3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert got[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30, "NewerNoncurrentVersions": 3}, got
    assert got[1]["Expiration"] == {"ExpiredObjectDeleteMarker": True}, got
    S3.delete_bucket_lifecycle(Bucket=b)
    # Suspended: a write replaces the null version and keeps the rest.
    S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    assert S3.get_bucket_versioning(Bucket=b)["Status"] == "Suspended"
    S3.put_object(Bucket=b, Key="doc", Body=b"suspended")
    assert S3.get_object(Bucket=b, Key="doc", VersionId="null")["Body"].read() == b"suspended"
    assert S3.get_object(Bucket=b, Key="doc", VersionId=v1)["Body"].read() == b"v1"
    # That null version is the newest: it lists first, as the latest, in
    # pages of one too (continued after the "null" version-id marker).
    doc = [(v["VersionId"], v["IsLatest"]) for v in S3.list_object_versions(Bucket=b, Prefix="doc")["Versions"]]
    assert doc == [("null", True), (v1, False)], doc
    paged = [(v["VersionId"], v["IsLatest"])
             for page in S3.get_paginator("list_object_versions").paginate(
                 Bucket=b, Prefix="doc", PaginationConfig={"PageSize": 1})
             for v in page.get("Versions", [])]
    assert paged == doc, paged
    everything = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for page in S3.get_paginator("list_object_versions").paginate(Bucket=b)
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    assert len(everything) == 3, everything
    r = S3.delete_objects(Bucket=b, Delete={"Objects": everything})
    assert len(r["Deleted"]) == 3 and not r.get("Errors"), r
    assert "Versions" not in S3.list_object_versions(Bucket=b)
    S3.delete_bucket(Bucket=b)


def test_ranges():
    b = bucket("ranges")
    data = blob(1_000_000, 2)
    S3.put_object(Bucket=b, Key="r", Body=data)
    for rng, want in [
        ("bytes=0-0", data[0:1]),
        ("bytes=10-19", data[10:20]),
        ("bytes=999990-", data[999990:]),
        ("bytes=-100", data[-100:]),
        ("bytes=500000-2000000", data[500000:]),
        ("bytes=0-999999", data),
    ]:
        g = S3.get_object(Bucket=b, Key="r", Range=rng)
        got = g["Body"].read()
        assert got == want, (rng, len(got), len(want))
        assert g["ContentLength"] == len(want), (rng, g["ContentLength"])
        assert g["ContentRange"].startswith("bytes "), g.get("ContentRange")
        assert g["ContentRange"].endswith(f"/{len(data)}"), g["ContentRange"]
    expect_error(lambda: S3.get_object(Bucket=b, Key="r", Range="bytes=2000000-"),
                 {"InvalidRange"}, {416})


def test_conditional_gets():
    b = bucket("cond")
    r = S3.put_object(Bucket=b, Key="c", Body=b"conditional")
    etag = r["ETag"]
    assert S3.get_object(Bucket=b, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    expect_error(lambda: S3.get_object(Bucket=b, Key="c", IfMatch='"0000"'),
                 {"PreconditionFailed"}, {412})
    expect_error(lambda: S3.get_object(Bucket=b, Key="c", IfNoneMatch=etag), {"304", "NotModified"}, {304})
    assert S3.get_object(Bucket=b, Key="c", IfNoneMatch='"0000"')["Body"].read() == b"conditional"
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    expect_error(lambda: S3.get_object(Bucket=b, Key="c", IfModifiedSince=future), {"304", "NotModified"}, {304})
    assert S3.get_object(Bucket=b, Key="c", IfModifiedSince=past)["Body"].read() == b"conditional"
    expect_error(lambda: S3.get_object(Bucket=b, Key="c", IfUnmodifiedSince=past),
                 {"PreconditionFailed"}, {412})
    expect_error(lambda: S3.head_object(Bucket=b, Key="c", IfNoneMatch=etag), {"304", "NotModified"}, {304})


def test_delete_and_batch_delete():
    b = bucket("delete")
    for i in range(10):
        S3.put_object(Bucket=b, Key=f"k{i}", Body=b"x" * i)
    S3.delete_object(Bucket=b, Key="k0")
    S3.delete_object(Bucket=b, Key="k0")  # idempotent
    S3.delete_object(Bucket=b, Key="never-existed")
    r = S3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1, 6)] + [{"Key": "ghost"}]})
    deleted = sorted(d["Key"] for d in r.get("Deleted", []))
    assert set(deleted) >= {f"k{i}" for i in range(1, 6)}, r
    assert not r.get("Errors"), r
    left = sorted(o["Key"] for o in S3.list_objects_v2(Bucket=b).get("Contents", []))
    assert left == [f"k{i}" for i in range(6, 10)], left


def test_copy():
    b = bucket("copy")
    data = blob(200_000, 3)
    S3.put_object(Bucket=b, Key="src", Body=data, Metadata={"a": "1"}, ContentType="text/x-src")
    S3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
    g = S3.get_object(Bucket=b, Key="dst")
    assert g["Body"].read() == data
    assert g["Metadata"] == {"a": "1"}, g["Metadata"]
    # Replace the metadata while copying.
    S3.copy_object(Bucket=b, Key="dst2", CopySource=f"{b}/src", MetadataDirective="REPLACE",
                   Metadata={"b": "2"}, ContentType="text/x-new")
    h = S3.head_object(Bucket=b, Key="dst2")
    assert h["Metadata"] == {"b": "2"} and h["ContentType"] == "text/x-new", h
    # The copy outlives its source.
    S3.delete_object(Bucket=b, Key="src")
    assert S3.get_object(Bucket=b, Key="dst")["Body"].read() == data
    expect_error(lambda: S3.copy_object(Bucket=b, Key="x", CopySource={"Bucket": b, "Key": "src"}),
                 {"NoSuchKey"}, {404})


def test_presigned_get():
    b = bucket("presign")
    S3.put_object(Bucket=b, Key="p", Body=b"presigned bytes")
    url = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.read() == b"presigned bytes"
    # A tampered signature is refused (boto3 signs presigned URLs with SigV2
    # unless told otherwise; check both kinds).
    v4 = client(signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=300)
    with urllib.request.urlopen(v4, timeout=30) as r:
        assert r.read() == b"presigned bytes"
    for good in (url, v4):
        u = urllib.parse.urlsplit(good)
        q = urllib.parse.parse_qsl(u.query)
        name = "X-Amz-Signature" if any(k == "X-Amz-Signature" for k, _ in q) else "Signature"
        # One character changed, the format kept (hex for v4, base64 for v2).
        swap = {"X-Amz-Signature": ("0", "1"), "Signature": ("A", "B")}[name]
        flip = lambda v: v[:5] + (swap[0] if v[5] != swap[0] else swap[1]) + v[6:]
        q = [(k, flip(v) if k == name else v) for k, v in q]
        bad = urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))
        assert bad != good
        try:
            urllib.request.urlopen(bad, timeout=30)
            raise AssertionError(f"a tampered presigned URL was accepted: {bad}")
        except urllib.error.HTTPError as e:
            assert e.code == 403, e.code


# ---------------------------------------------------------------- listings

def test_listings_with_pagination_and_delimiters():
    b = bucket("list")
    keys = [f"logs/2026/{d:02}/{i:04}.txt" for d in range(1, 4) for i in range(350)]  # 1,050 keys
    keys += ["top-a", "top-b", "photos/x.jpg", "photos/y.jpg"]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(32) as ex:
        list(ex.map(lambda k: S3.put_object(Bucket=b, Key=k, Body=k.encode()), keys))
    want = sorted(keys)
    # v2, 1,000 per page by default, continuation tokens.
    got, token, pages = [], None, 0
    while True:
        kw = {"Bucket": b}
        if token:
            kw["ContinuationToken"] = token
        r = S3.list_objects_v2(**kw)
        got += [o["Key"] for o in r.get("Contents", [])]
        assert r["KeyCount"] == len(r.get("Contents", [])), r["KeyCount"]
        pages += 1
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert got == want, (len(got), len(want))
    assert pages == 2, pages
    # The paginator with small pages.
    pg = S3.get_paginator("list_objects_v2")
    got = [o["Key"] for p in pg.paginate(Bucket=b, PaginationConfig={"PageSize": 77}) for o in p.get("Contents", [])]
    assert got == want
    # Prefix and delimiter: CommonPrefixes.
    r = S3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["logs/", "photos/"], r["CommonPrefixes"]
    assert [o["Key"] for o in r["Contents"]] == ["top-a", "top-b"]
    r = S3.list_objects_v2(Bucket=b, Prefix="logs/2026/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["logs/2026/01/", "logs/2026/02/", "logs/2026/03/"]
    assert "Contents" not in r or not r["Contents"]
    # Prefixes paginate too.
    got = []
    for p in pg.paginate(Bucket=b, Prefix="logs/2026/02/", PaginationConfig={"PageSize": 100}):
        got += [o["Key"] for o in p.get("Contents", [])]
    assert got == [k for k in want if k.startswith("logs/2026/02/")]
    # StartAfter and MaxKeys.
    r = S3.list_objects_v2(Bucket=b, StartAfter="photos/x.jpg", MaxKeys=3)
    assert [o["Key"] for o in r["Contents"]] == ["photos/y.jpg", "top-a", "top-b"], r["Contents"]
    # v1 with markers.
    got, marker = [], ""
    while True:
        r = S3.list_objects(Bucket=b, Marker=marker, MaxKeys=400)
        page = [o["Key"] for o in r.get("Contents", [])]
        got += page
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or page[-1]
    assert got == want
    r = S3.list_objects(Bucket=b, Delimiter="/", Prefix="photos/")
    assert [o["Key"] for o in r["Contents"]] == ["photos/x.jpg", "photos/y.jpg"]
    # Sizes and ETags in listings.
    r = S3.list_objects_v2(Bucket=b, Prefix="top-a")
    o = r["Contents"][0]
    assert o["Size"] == len(b"top-a") and o["ETag"].strip('"') == hashlib.md5(b"top-a").hexdigest(), o


# ---------------------------------------------------------------- multipart

def test_multipart():
    b = bucket("multipart")
    part = 5 << 20
    parts = [blob(part, 10), blob(part, 11), blob(1234, 12)]
    up = S3.create_multipart_upload(Bucket=b, Key="big", ContentType="application/x-big",
                                    Metadata={"m": "1"})
    uid = up["UploadId"]
    # Not visible until complete.
    assert "Contents" not in S3.list_objects_v2(Bucket=b)
    ups = S3.list_multipart_uploads(Bucket=b)
    assert [u["UploadId"] for u in ups.get("Uploads", [])] == [uid], ups
    etags = []
    for i, p in enumerate(parts, start=1):
        r = S3.upload_part(Bucket=b, Key="big", UploadId=uid, PartNumber=i, Body=p)
        etags.append(r["ETag"])
        assert r["ETag"].strip('"') == hashlib.md5(p).hexdigest()
    lp = S3.list_parts(Bucket=b, Key="big", UploadId=uid)
    assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2, 3]
    assert [p["Size"] for p in lp["Parts"]] == [len(p) for p in parts]
    # Wrong ETag: refused.
    expect_error(lambda: S3.complete_multipart_upload(
        Bucket=b, Key="big", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]}), {"InvalidPart"}, {400})
    r = S3.complete_multipart_upload(
        Bucket=b, Key="big", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert r["ETag"].strip('"') == f"{digest}-3", (r["ETag"], digest)
    whole = b"".join(parts)
    g = S3.get_object(Bucket=b, Key="big")
    assert g["Body"].read() == whole
    assert g["ContentType"] == "application/x-big" and g["Metadata"] == {"m": "1"}, g
    # A range across the part boundary.
    g = S3.get_object(Bucket=b, Key="big", Range=f"bytes={part - 10}-{part + 9}")
    assert g["Body"].read() == whole[part - 10:part + 10]
    assert not S3.list_multipart_uploads(Bucket=b).get("Uploads")
    # Abort: the upload is gone.
    up = S3.create_multipart_upload(Bucket=b, Key="aborted")
    S3.upload_part(Bucket=b, Key="aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100)
    S3.abort_multipart_upload(Bucket=b, Key="aborted", UploadId=up["UploadId"])
    expect_error(lambda: S3.list_parts(Bucket=b, Key="aborted", UploadId=up["UploadId"]),
                 {"NoSuchUpload"}, {404})
    expect_error(lambda: S3.get_object(Bucket=b, Key="aborted"), {"NoSuchKey"}, {404})


def test_list_multipart_uploads_with_delimiter_and_pages():
    b = bucket("uploadlist")
    ids = {}
    for key in ["a.txt", "dir/x", "dir/y", "dir/y", "z.txt"]:
        ids.setdefault(key, []).append(
            S3.create_multipart_upload(Bucket=b, Key=key)["UploadId"])
    r = S3.list_multipart_uploads(Bucket=b, Delimiter="/")
    assert [u["Key"] for u in r["Uploads"]] == ["a.txt", "z.txt"], r
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/"], r
    # Under the prefix, the uploads themselves, both of dir/y.
    r = S3.list_multipart_uploads(Bucket=b, Prefix="dir/", Delimiter="/")
    assert [u["Key"] for u in r["Uploads"]] == ["dir/x", "dir/y", "dir/y"], r
    assert "CommonPrefixes" not in r, r
    # One entry a page: a common prefix is one entry, and paging goes on
    # after it, through markers, until every entry was seen once.
    seen, kw = [], {}
    for _ in range(10):
        r = S3.list_multipart_uploads(Bucket=b, Delimiter="/", MaxUploads=1, **kw)
        seen += [u["Key"] for u in r.get("Uploads", [])]
        seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            break
        kw = {"KeyMarker": r["NextKeyMarker"]}
        if r.get("NextUploadIdMarker"):
            kw["UploadIdMarker"] = r["NextUploadIdMarker"]
    assert seen == ["a.txt", "dir/", "z.txt"], seen
    for key, uids in ids.items():
        for uid in uids:
            S3.abort_multipart_upload(Bucket=b, Key=key, UploadId=uid)
    assert not S3.list_multipart_uploads(Bucket=b).get("Uploads")


def test_upload_part_copy():
    b = bucket("partcopy")
    src = blob(6 << 20, 20)
    S3.put_object(Bucket=b, Key="src", Body=src)
    up = S3.create_multipart_upload(Bucket=b, Key="dst")
    try:
        r1 = S3.upload_part_copy(Bucket=b, Key="dst", UploadId=up["UploadId"], PartNumber=1,
                                 CopySource={"Bucket": b, "Key": "src"}, CopySourceRange="bytes=0-5242879")
    except ClientError as e:
        if code(e) == "NotImplemented":
            S3.abort_multipart_upload(Bucket=b, Key="dst", UploadId=up["UploadId"])
            print("  (UploadPartCopy is not implemented; skipped)")
            return
        raise
    r2 = S3.upload_part(Bucket=b, Key="dst", UploadId=up["UploadId"], PartNumber=2, Body=b"tail")
    S3.complete_multipart_upload(Bucket=b, Key="dst", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": r2["ETag"]}]})
    assert S3.get_object(Bucket=b, Key="dst")["Body"].read() == src[:5 << 20] + b"tail"


# ---------------------------------------------------------------- credentials

def test_wrong_credentials_are_refused():
    bad = client(secret=SECRET[:-1] + ("A" if SECRET[-1] != "A" else "B"))
    expect_error(lambda: bad.list_buckets(), {"SignatureDoesNotMatch", "AccessDenied"}, {403})
    unknown = client(key_id="AKIAUNKNOWNUNKNOWN00")
    expect_error(lambda: unknown.list_buckets(),
                 {"InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch"}, {403})
    anon = boto3.client("s3", endpoint_url=ENDPOINT, region_name=REGION,
                        config=Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"}))
    expect_error(lambda: anon.list_buckets(), {"AccessDenied", "InvalidAccessKeyId"}, {403})


# ---------------------------------------------------------------- bad input

def raw_signed(method, path, body, headers=None):
    """A SigV4-signed request sent by hand (so boto3's own checks do not get
    in the way); returns (status, body)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = ENDPOINT + urllib.parse.quote(path)
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(Credentials(KEY_ID, SECRET), "s3", REGION).add_auth(req)
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, u.path, body=body, headers=dict(req.headers))
    r = conn.getresponse()
    out = r.read()
    conn.close()
    return r.status, out


def test_bad_input():
    b = bucket("bad")
    # Key over 1,024 bytes.
    st, body = raw_signed("PUT", f"/{b}/" + "k" * 1100, b"x")
    assert st == 400 and b"KeyTooLong" in body, (st, body[:300])
    # Wrong Content-MD5.
    expect_error(lambda: S3.put_object(Bucket=b, Key="md5", Body=b"hello",
                                       ContentMD5="XrY7u+Ae7tCTyyK7j1rNww=="), {"BadDigest"}, {400})
    expect_error(lambda: S3.head_object(Bucket=b, Key="md5"), {"404", "NoSuchKey"}, {404})
    # Malformed Content-MD5.
    expect_error(lambda: S3.put_object(Bucket=b, Key="md5", Body=b"hello", ContentMD5="not base64!"),
                 {"InvalidDigest", "InvalidArgument", "BadDigest"}, {400})
    # A huge declared Content-Length is refused before any body is read.
    st, body = raw_signed_headers_only(f"/{b}/huge", 50 << 40)
    assert st in (400, 413) and (b"EntityTooLarge" in body or b"MaxMessageLengthExceeded" in body), (st, body[:300])
    # A truncated body: the connection closes with an error or the request
    # is answered with one, and nothing becomes visible.
    truncated_put(f"/{b}/trunc", 100_000, 1000)
    expect_error(lambda: S3.head_object(Bucket=b, Key="trunc"), {"404", "NoSuchKey"}, {404})
    # A PUT refused before its body is read (Expect: 100-continue, the body
    # withheld) ends its connection: the next bytes on it could be the body
    # or the next request, and reading either as the other corrupts both.
    u = urllib.parse.urlparse(ENDPOINT)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall((f"PUT /{b}/refused HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n").encode())
    data = read_response(s)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 403") and b"connection: close" in head, data[:400]
    s.close()
    # The gateway is still fine afterwards.
    S3.put_object(Bucket=b, Key="after", Body=b"ok")
    assert S3.get_object(Bucket=b, Key="after")["Body"].read() == b"ok"


def signed_headers(method, path, length):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = ENDPOINT + urllib.parse.quote(path)
    req = AWSRequest(method=method, url=url, headers={"Content-Length": str(length),
                                                       "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    SigV4Auth(Credentials(KEY_ID, SECRET), "s3", REGION).add_auth(req)
    return url, dict(req.headers)


def send_head(path, length):
    url, headers = signed_headers("PUT", path, length)
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    lines = [f"PUT {u.path} HTTP/1.1", f"Host: {u.netloc}"] + [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return s


def read_response(s):
    s.settimeout(60)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if len(rest) >= length:
                    break
    except ConnectionResetError:
        pass
    return data


def raw_signed_headers_only(path, length):
    s = send_head(path, length)
    data = read_response(s)
    s.close()
    status_line = data.split(b"\r\n", 1)[0]
    st = int(status_line.split()[1]) if status_line else 0
    return st, data


def truncated_put(path, declared, sent):
    s = send_head(path, declared)
    s.sendall(b"t" * sent)
    s.shutdown(socket.SHUT_WR)
    started = time.time()
    data = read_response(s)
    s.close()
    assert time.time() - started < 90, "a truncated body hung the connection"
    if data:
        status_line = data.split(b"\r\n", 1)[0]
        st = int(status_line.split()[1])
        assert st >= 400, data[:300]


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and only in n]
    failed = []
    for name, fn in tests:
        t = time.time()
        try:
            fn()
            print(f"ok   {name} ({time.time() - t:.1f} s)", flush=True)
        except Exception:
            failed.append(name)
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(tests)} failed: {', '.join(failed)}")
        sys.exit(1)
    print(f"all {len(tests)} passed")


if __name__ == "__main__":
    main()
