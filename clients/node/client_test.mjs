// Node.js client test of qgate: loads proto/ directly with
// @grpc/proto-loader (no generated code), then against the qgate at
// QGATE_ADDR sends, subscribes, acks, and sees a nacked message
// redelivered. QGATE_TOKEN, if set, is sent as a bearer token.
//
//   QGATE_ADDR=127.0.0.1:7070 node client_test.mjs
//
// The Go test next to it (node_test.go) starts an in-process qgate and runs
// this script.
import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = process.env.QGATE_PROTO_DIR || path.resolve(here, '../../proto');
const addr = process.env.QGATE_ADDR;
const token = process.env.QGATE_TOKEN;

const definition = protoLoader.loadSync('qgate/v1/queue.proto', {
  includeDirs: [protoDir],
  keepCase: true, // field names as in the .proto: message_ids, ack_id
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true, // a virtual `kind` field names the oneof member set
});
const qgate = grpc.loadPackageDefinition(definition).qgate.v1;

function newClient() {
  assert.ok(addr, 'QGATE_ADDR must name a running qgate (host:port)');
  return new qgate.QueueService(addr, grpc.credentials.createInsecure());
}

function metadata() {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}

function send(client, topic, messages) {
  return new Promise((resolve, reject) => {
    client.Send({ topic, messages }, metadata(), { deadline: Date.now() + 10000 }, (err, resp) =>
      err ? reject(err) : resolve(resp));
  });
}

const uniqueTopic = (what) => `node_${what}_${process.pid}_${Date.now()}`;

test('send returns one id per message', async () => {
  const client = newClient();
  try {
    const resp = await send(client, uniqueTopic('send'), [
      { body: Buffer.from('a') }, { body: Buffer.from('b') },
    ]);
    assert.equal(resp.message_ids.length, 2);
    for (const id of resp.message_ids) assert.match(id, /^[0-9a-f]{32}$/);
  } finally {
    client.close();
  }
});

test('send to an invalid topic is INVALID_ARGUMENT', async () => {
  const client = newClient();
  try {
    // The topic is within a node_* ACL but not a valid NSQ name.
    await assert.rejects(send(client, `${uniqueTopic('bad')} !`, [{ body: Buffer.from('x') }]),
      (err) => err.code === grpc.status.INVALID_ARGUMENT);
  } finally {
    client.close();
  }
});

test('subscribe: deliveries with attributes, ack, nack redelivered', async () => {
  const client = newClient();
  const topic = uniqueTopic('sub');
  const call = client.Subscribe(metadata());
  const settled = {}; // body -> attempts seen
  let ids;
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for deliveries')), 20000);
      const fail = (err) => { clearTimeout(timer); reject(err); };
      call.on('error', fail);
      call.on('data', (resp) => {
        try {
          switch (resp.kind) {
            case 'opened':
              assert.equal(resp.opened.max_in_flight, 10);
              // Send once the subscription is open.
              send(client, topic, [
                { body: Buffer.from('ack-me'), attributes: { lang: 'node' } },
                { body: Buffer.from('nack-me') },
              ]).then((r) => { ids = r.message_ids; }, fail);
              return;
            case 'ack_error':
              throw new Error(`ack error for ${resp.ack_error.ack_id}: ${resp.ack_error.status.message}`);
            case 'delivery': {
              const d = resp.delivery;
              const body = d.body.toString();
              (settled[body] ??= []).push(d.attempt);
              if (body === 'ack-me') {
                assert.equal(d.attributes.lang, 'node');
                assert.equal(d.attempt, 1);
                call.write({ ack: { ack_ids: [d.ack_id] } });
              } else if (body === 'nack-me' && d.attempt === 1) {
                call.write({ nack: { ack_ids: [d.ack_id], delay: { seconds: 0 } } });
              } else if (body === 'nack-me') {
                call.write({ ack: { ack_ids: [d.ack_id] } });
              } else {
                throw new Error(`unexpected delivery ${body}`);
              }
              if (settled['ack-me'] && settled['nack-me']?.length === 2) {
                clearTimeout(timer);
                resolve();
              }
              return;
            }
            default:
              throw new Error(`unexpected response ${resp.kind}`);
          }
        } catch (err) {
          fail(err);
        }
      });
      call.write({ open: { topic, channel: 'node', max_in_flight: 10, ack_deadline: { seconds: 30 } } });
    });
    assert.deepEqual(settled, { 'ack-me': [1], 'nack-me': [1, 2] });
    assert.equal(ids?.length, 2);
    // Half-close: the server ends the stream OK.
    await new Promise((resolve, reject) => {
      call.removeAllListeners('error');
      call.on('error', reject);
      call.on('end', resolve);
      call.on('data', () => {});
      call.end();
    });
  } finally {
    call.cancel();
    client.close();
  }
});

test('sendStream answers each request', async () => {
  const client = newClient();
  const call = client.SendStream(metadata());
  try {
    const got = await new Promise((resolve, reject) => {
      const out = [];
      call.on('error', reject);
      call.on('data', (r) => out.push(r));
      call.on('end', () => resolve(out));
      const topic = uniqueTopic('stream');
      call.write({ request_id: '1', send: { topic, messages: [{ body: Buffer.from('s1') }] } });
      call.write({ request_id: '2', send: { topic, messages: [{ body: Buffer.from('s2') }] } });
      call.end();
    });
    assert.deepEqual(got.map((r) => r.request_id).sort(), ['1', '2']);
    for (const r of got) {
      assert.equal(r.status?.code ?? 0, 0, r.status?.message);
      assert.equal(r.message_ids.length, 1);
    }
  } finally {
    client.close();
  }
});
