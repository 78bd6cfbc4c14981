// An agent written against the AWS SDK for JavaScript v3, unmodified and unconfigured: it names
// only the region. Credentials (the placeholder keys), the CA bundle (NODE_EXTRA_CA_CERTS) and
// the names (a private /etc/hosts) all come from the environment `interceptor run` prepares, so
// the SDK behaves as it would against real AWS: regional STS endpoint, virtual-hosted S3 with
// flexible checksums (aws-chunked, CRC trailer) on PutObject, EC2 query and DynamoDB JSON.
//
// Usage (as an agent):
//   interceptor run --token-file F -- node tests/peers/js_agent.mjs \
//       --bucket B --body-file IN --out-file OUT [--table T]
//
// Uploads IN twice (from a Buffer and from a file stream), downloads each object again into
// OUT.from-buffer.bin and OUT.from-stream.bin (the caller compares the bytes), and prints one
// JSON line on stdout:
//   {"arn", "account", "bucket_created", "buckets", "put_headers", "put_checksums", "got_bytes",
//    "launched", "instances", "tables"}
// put_headers, by object key, are PutObject's wire headers as the SDK sent them (observed after
// checksums and signing, not changed); put_checksums and got_bytes are by object key too.
// Any SDK error is printed as JSON on stderr ({"error", "name", "status", "request_id"}) and the
// exit code is 1.

import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { DynamoDBClient, CreateTableCommand, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { EC2Client, DescribeInstancesCommand, RunInstancesCommand } from '@aws-sdk/client-ec2';
import {
  CreateSecretCommand, GetSecretValueCommand, SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListBucketsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';

const REGION = 'us-east-1';
// The same bytes are uploaded twice, once per way the SDK sends a checksum by default.
const BUFFER_KEY = 'js-agent/from-buffer.bin';
const STREAM_KEY = 'js-agent/from-stream.bin';
// An image moto ships in its default AMI list (harness.AMI_ID).
const AMI_ID = 'ami-12c6146b';

function options() {
  const { values } = parseArgs({
    options: {
      bucket: { type: 'string' },
      'body-file': { type: 'string' },
      'out-file': { type: 'string' },
      table: { type: 'string', default: 'e2e-js' },
    },
  });
  for (const name of ['bucket', 'body-file', 'out-file']) {
    if (!values[name]) {
      throw new Error(`js agent: --${name} is required`);
    }
  }
  return values;
}

async function identity(out) {
  const sts = new STSClient({ region: REGION });
  const answer = await sts.send(new GetCallerIdentityCommand({}));
  out.arn = answer.Arn;
  out.account = answer.Account;
}

async function objects(out, args) {
  const s3 = new S3Client({ region: REGION });
  await s3.send(new CreateBucketCommand({ Bucket: args.bucket }));
  out.bucket_created = args.bucket;

  out.put_headers = {};
  observeWireHeaders(s3, out.put_headers);
  out.put_checksums = {};
  out.got_bytes = {};
  // No ChecksumAlgorithm given: the SDK's default (WHEN_SUPPORTED) adds a CRC32. A Buffer body
  // gets it as a header; a stream body is sent aws-chunked with the CRC in a trailer
  // (x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER).
  const bodies = {
    [BUFFER_KEY]: () => readFileSync(args['body-file']),
    [STREAM_KEY]: () => createReadStream(args['body-file']),
  };
  for (const [key, body] of Object.entries(bodies)) {
    const put = await s3.send(new PutObjectCommand({
      Bucket: args.bucket, Key: key, Body: body(),
    }));
    out.put_checksums[key] = put.ChecksumCRC32 ?? put.ChecksumCRC64NVME ?? null;

    const got = await s3.send(new GetObjectCommand({ Bucket: args.bucket, Key: key }));
    const bytes = await got.Body.transformToByteArray();
    writeFileSync(`${args['out-file']}.${key.split('/').pop()}`, bytes);
    out.got_bytes[key] = bytes.length;
  }

  // Multipart: two parts (S3's minimum part size is 5 MiB for all but the last).
  const MULTIPART_KEY = 'js-agent/multipart.bin';
  const first = Buffer.alloc(5 * 1024 * 1024, 'a');
  const second = Buffer.from('the last part');
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({
    Bucket: args.bucket, Key: MULTIPART_KEY,
  }));
  const parts = [];
  for (const [index, body] of [first, second].entries()) {
    const part = await s3.send(new UploadPartCommand({
      Bucket: args.bucket, Key: MULTIPART_KEY, UploadId, PartNumber: index + 1, Body: body,
    }));
    parts.push({ ETag: part.ETag, PartNumber: index + 1 });
  }
  await s3.send(new CompleteMultipartUploadCommand({
    Bucket: args.bucket, Key: MULTIPART_KEY, UploadId, MultipartUpload: { Parts: parts },
  }));
  const whole = await s3.send(new GetObjectCommand({ Bucket: args.bucket, Key: MULTIPART_KEY }));
  out.multipart_bytes = (await whole.Body.transformToByteArray()).length;

  const listed = await s3.send(new ListBucketsCommand({}));
  out.buckets = (listed.Buckets ?? []).map((bucket) => bucket.Name);
}

/**
 * Record the headers the SDK put on the wire for PutObject (after checksums and signing), so the
 * test can see that the default aws-chunked + CRC trailer path was taken. Observes only.
 */
function observeWireHeaders(s3, byKey) {
  const wanted = ['content-encoding', 'x-amz-content-sha256', 'x-amz-trailer',
    'x-amz-decoded-content-length', 'content-length', 'transfer-encoding',
    'x-amz-checksum-crc32', 'x-amz-sdk-checksum-algorithm'];
  s3.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'PutObjectCommand') {
      const headers = Object.fromEntries(
        Object.entries(args.request.headers).map(([name, value]) => [name.toLowerCase(), value]),
      );
      byKey[args.input.Key] = Object.fromEntries(
        wanted.filter((name) => name in headers).map((name) => [name, headers[name]]),
      );
    }
    return next(args);
  }, { step: 'deserialize', name: 'interceptorE2eObserveHeaders' });
}

async function instances(out) {
  const ec2 = new EC2Client({ region: REGION });
  const launched = await ec2.send(new RunInstancesCommand({
    ImageId: AMI_ID, MinCount: 1, MaxCount: 1, InstanceType: 't3.micro',
  }));
  out.launched = launched.Instances[0].InstanceId;
  const described = await ec2.send(new DescribeInstancesCommand({}));
  out.instances = (described.Reservations ?? [])
    .flatMap((reservation) => reservation.Instances ?? [])
    .map((instance) => instance.InstanceId);
}

async function tables(out, args) {
  const dynamodb = new DynamoDBClient({ region: REGION });
  await dynamodb.send(new CreateTableCommand({
    TableName: args.table,
    AttributeDefinitions: [{ AttributeName: 'k', AttributeType: 'S' }],
    KeySchema: [{ AttributeName: 'k', KeyType: 'HASH' }],
    BillingMode: 'PAY_PER_REQUEST',
  }));
  out.tables = (await dynamodb.send(new ListTablesCommand({}))).TableNames;
}

async function secrets(out, args) {
  const sm = new SecretsManagerClient({ region: REGION });
  const name = `js-agent/${args.table}`;
  await sm.send(new CreateSecretCommand({ Name: name, SecretString: 'js-s3cr3t' }));
  out.secret = (await sm.send(new GetSecretValueCommand({ SecretId: name }))).SecretString;
}

async function main() {
  const args = options();
  const out = {};
  await identity(out);
  await objects(out, args);
  await instances(out);
  await tables(out, args);
  await secrets(out, args);
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  const meta = error.$metadata ?? {};
  console.error(JSON.stringify({
    error: String(error.message ?? error),
    name: error.name,
    status: meta.httpStatusCode ?? null,
    request_id: meta.requestId ?? null,
  }));
  process.exit(1);
});
