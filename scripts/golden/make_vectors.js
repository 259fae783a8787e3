// Regenerate: node scripts/golden/make_vectors.js (the reference tree: npm ci --prefix reference;
// reference/lookup.js finds it, $HYPERDHT_NODE_MODULES overrides)
//
// Golden wire vectors from the Node.js reference encoder, protocol-buffers@3.2.1
// (the version hyperdht@1.3.0 and dht-rpc@2.3.0 resolve), written to
// tests/fixtures/golden/vectors.json for tests/test_messages.py.
//
// It compiles OUR .proto files (hyperdht/messages/*.proto) and, as a cross-check,
// the reference's own schemas (dht-rpc's messages.js, hyperdht's schema.proto):
// every vector must encode and decode the same with both, else it aborts.
//
// Modes:
//   node make_vectors.js                        write tests/fixtures/golden/vectors.json
//   node make_vectors.js --check                exit 1 if that file is out of date
//   node make_vectors.js decode KIND HEX...     decode each HEX with the reference; one
//                                               JSON line each: {"ok":true,"value":{...}}
//                                               or {"ok":false,"error":"..."}
//   node make_vectors.js encode KIND JSON...    encode each JSON object; one hex line each
// KIND is dht_rpc.Request, dht_rpc.Response, peers.Request or peers.Response; it
// applies to the arguments after it, and may be repeated to switch kinds.
// In JSON, bytes fields are hex strings; null or a missing key means "not set".
'use strict'

// protocol-buffers@3 calls the deprecated Buffer() constructor: keep stderr quiet.
process.noDeprecation = true

const fs = require('fs')
const path = require('path')
const crypto = require('crypto')
const ref = require('../../reference/lookup')
const protobuf = ref.require('protocol-buffers')

const ROOT = path.resolve(__dirname, '..', '..')
const OUT = path.join(ROOT, 'tests', 'fixtures', 'golden', 'vectors.json')
const MSG_DIR = path.join(ROOT, 'hyperdht', 'messages')

const ours = {
  dht_rpc: protobuf(fs.readFileSync(path.join(MSG_DIR, 'dht_rpc.proto'), 'utf-8')),
  peers: protobuf(fs.readFileSync(path.join(MSG_DIR, 'peers.proto'), 'utf-8'))
}
const reference = {
  dht_rpc: ref.require('dht-rpc/messages'),
  peers: protobuf(fs.readFileSync(ref.resolve('hyperdht/schema.proto'), 'utf-8'))
}

const KINDS = ['dht_rpc.Request', 'dht_rpc.Response', 'peers.Request', 'peers.Response']

function lookup (set, kind) {
  const [file, name] = kind.split('.')
  if (!KINDS.includes(kind)) throw new Error('unknown kind ' + kind + ' (one of ' + KINDS.join(', ') + ')')
  return set[file][name]
}

function fieldsOf (kind) {
  const [file, name] = kind.split('.')
  const schema = ours[file].toJSON()
  return schema.messages.find((m) => m.name === name).fields
}

// JSON (bytes as hex) -> the object the reference's encode() takes.
function fromJSON (kind, obj) {
  const out = {}
  for (const f of fieldsOf(kind)) {
    if (!(f.name in obj)) continue
    const v = obj[f.name]
    out[f.name] = (v !== null && f.type === 'bytes') ? Buffer.from(v, 'hex') : v
  }
  for (const k of Object.keys(obj)) {
    if (!fieldsOf(kind).some((f) => f.name === k)) throw new Error(kind + ' has no field ' + k)
  }
  return out
}

// The reference's decode() result -> JSON (bytes as hex).
function toJSON (kind, obj) {
  const out = {}
  for (const f of fieldsOf(kind)) {
    const v = obj[f.name]
    out[f.name] = Buffer.isBuffer(v) ? v.toString('hex') : v
  }
  return out
}

function encode (kind, obj) {
  const input = fromJSON(kind, obj)
  const hex = lookup(ours, kind).encode(input).toString('hex')
  const ref = lookup(reference, kind).encode(input).toString('hex')
  if (hex !== ref) throw new Error(kind + ' ' + JSON.stringify(obj) + ': our schema gives ' + hex + ', the reference ' + ref)
  return hex
}

function decode (kind, hex) {
  const run = (set) => {
    try {
      return { ok: true, value: toJSON(kind, lookup(set, kind).decode(Buffer.from(hex, 'hex'))) }
    } catch (err) {
      return { ok: false, error: err.message }
    }
  }
  const res = run(ours)
  const ref = run(reference)
  if (JSON.stringify(res) !== JSON.stringify(ref)) {
    throw new Error(kind + ' ' + hex + ': our schema decodes to ' + JSON.stringify(res) + ', the reference to ' + JSON.stringify(ref))
  }
  return res
}

// Deterministic pseudo-random bytes, so regenerating gives the same file.
function bytes (label, n) {
  const chunks = []
  for (let i = 0; chunks.length * 32 < n; i++) {
    chunks.push(crypto.createHash('sha256').update(label + ':' + i).digest())
  }
  return Buffer.concat(chunks).subarray(0, n).toString('hex')
}

const id = bytes('id', 32)
const target = bytes('target', 32)
const token = bytes('token', 32)
const peer = 'c0a8010a1f90' // 192.168.1.10:8080
const peer2 = '7f000001c000' // 127.0.0.1:49152

// [name, kind, input]
const ENCODE_CASES = [
  ['request all fields', 'dht_rpc.Request', { command: 'announce', id, target, forwardRequest: peer, forwardResponse: peer2, roundtripToken: token, value: bytes('value', 40) }],
  ['request only command', 'dht_rpc.Request', { command: '_ping' }],
  ['request all optional null', 'dht_rpc.Request', { command: '_ping', id: null, target: null, forwardRequest: null, forwardResponse: null, roundtripToken: null, value: null }],
  ['request all optional empty', 'dht_rpc.Request', { command: 'x', id: '', target: '', forwardRequest: '', forwardResponse: '', roundtripToken: '', value: '' }],
  ['request empty command', 'dht_rpc.Request', { command: '' }],
  ['request ping', 'dht_rpc.Request', { command: '_ping', id }],
  ['request ephemeral ping', 'dht_rpc.Request', { command: '_ping' }],
  ['request find_node', 'dht_rpc.Request', { command: '_find_node', id, target }],
  ['request holepunch', 'dht_rpc.Request', { command: '_ping', id, forwardRequest: peer }],
  ['request forwarded', 'dht_rpc.Request', { command: '_ping', id, forwardResponse: peer2 }],
  ['request update', 'dht_rpc.Request', { command: 'peers', id, target, roundtripToken: token, value: '08011000' }],
  ['request empty value only', 'dht_rpc.Request', { command: 'peers', value: '' }],
  ['request unicode command', 'dht_rpc.Request', { command: 'p\u00e9ers-\u03bb-\u4e2d\u6587-\ud83d\ude80', target }],
  ['request long command', 'dht_rpc.Request', { command: 'c'.repeat(200) }],
  ['request value 127 bytes', 'dht_rpc.Request', { command: 'v', value: bytes('v127', 127) }],
  ['request value 128 bytes', 'dht_rpc.Request', { command: 'v', value: bytes('v128', 128) }],
  ['request value 16384 bytes', 'dht_rpc.Request', { command: 'v', target, value: bytes('v16384', 16384) }],
  ['request short id', 'dht_rpc.Request', { command: '_ping', id: '01' }],
  ['response all fields', 'dht_rpc.Response', { id, nodes: bytes('nodes', 38 * 20), value: peer, roundtripToken: token }],
  ['response empty', 'dht_rpc.Response', {}],
  ['response all null', 'dht_rpc.Response', { id: null, nodes: null, value: null, roundtripToken: null }],
  ['response all empty', 'dht_rpc.Response', { id: '', nodes: '', value: '', roundtripToken: '' }],
  ['response ping', 'dht_rpc.Response', { id, value: peer2, roundtripToken: token }],
  ['response find_node no nodes', 'dht_rpc.Response', { id, nodes: '', roundtripToken: token }],
  ['response find_node one node', 'dht_rpc.Response', { id, nodes: bytes('node1', 32) + peer, roundtripToken: token }],
  ['response ephemeral query', 'dht_rpc.Response', { nodes: bytes('nodes3', 38 * 3), value: null, roundtripToken: token }],
  ['response value 300 bytes', 'dht_rpc.Response', { id, value: bytes('r300', 300) }],
  ['response value 2000 bytes', 'dht_rpc.Response', { value: bytes('r2000', 2000) }],
  ['peers lookup', 'peers.Request', { type: 0, port: 0 }],
  ['peers lookup with local address', 'peers.Request', { type: 0, localAddress: 'c0a8000a1f90', port: 0 }],
  ['peers announce', 'peers.Request', { type: 1, port: 8080 }],
  ['peers announce port 65535', 'peers.Request', { type: 1, port: 65535, localAddress: peer }],
  ['peers announce port 1', 'peers.Request', { type: 1, port: 1 }],
  ['peers announce port 128', 'peers.Request', { type: 1, port: 128 }],
  ['peers unannounce', 'peers.Request', { type: 2, port: 0, localAddress: null }],
  ['peers type only', 'peers.Request', { type: 0 }],
  ['peers port null', 'peers.Request', { type: 1, port: null }],
  ['peers port max uint32', 'peers.Request', { type: 1, port: 4294967295 }],
  ['peers unknown type', 'peers.Request', { type: 7 }],
  ['peers empty local address', 'peers.Request', { type: 1, port: 0, localAddress: '' }],
  ['peers response full', 'peers.Response', { peers: peer + peer2, localPeers: '010a1f90' }],
  ['peers response peers only', 'peers.Response', { peers: bytes('peers150', 6 * 150) }],
  ['peers response empty', 'peers.Response', {}],
  ['peers response null', 'peers.Response', { peers: null, localPeers: null }],
  ['peers response empty bytes', 'peers.Response', { peers: '', localPeers: '' }]
]

// [name, kind, hex]: inputs for the reference's decoder, valid or not.
const DECODE_CASES = [
  ['empty request', 'dht_rpc.Request', ''],
  ['empty response', 'dht_rpc.Response', ''],
  ['empty peers request', 'peers.Request', ''],
  ['empty peers response', 'peers.Response', ''],
  ['request without command', 'dht_rpc.Request', '1202aabb'],
  ['peers request without type', 'peers.Request', '1050'],
  ['peers request type only', 'peers.Request', '0801'],
  ['command invalid utf-8', 'dht_rpc.Request', '0a02fffe'],
  ['command utf-16 surrogate in utf-8', 'dht_rpc.Request', '0a03eda080'],
  ['command cut 4-byte sequence', 'dht_rpc.Request', '0a0461f09f98'],
  ['command overlong encoding', 'dht_rpc.Request', '0a02c0af'],
  ['unknown varint field', 'dht_rpc.Request', '0a0161' + '4801'],
  ['unknown length-delimited field', 'dht_rpc.Request', '0a0161' + '7a03010203'],
  ['unknown fixed64 field', 'dht_rpc.Request', '0a0161' + '490102030405060708'],
  ['unknown fixed32 field', 'dht_rpc.Request', '0a0161' + '4d01020304'],
  ['unknown field in response', 'dht_rpc.Response', '0a01aa' + '2801'],
  ['unknown field in peers response', 'peers.Response', '0a06' + peer + '1801'],
  ['duplicate command', 'dht_rpc.Request', '0a0161' + '0a0162'],
  ['duplicate bytes field', 'dht_rpc.Response', '0a01aa' + '0a01bb'],
  ['fields out of order', 'dht_rpc.Request', '3a01ff' + '1201aa' + '0a0161'],
  ['non-minimal varint length', 'dht_rpc.Request', '0a810061'],
  ['truncated varint', 'dht_rpc.Request', '0a0161' + '48'],
  ['truncated length', 'dht_rpc.Request', '0a'],
  ['truncated tag varint', 'dht_rpc.Response', '80'],
  ['wire type 6', 'dht_rpc.Request', '0a0161' + '4e'],
  ['wire type 7', 'dht_rpc.Response', '0f'],
  ['lone end group', 'dht_rpc.Request', '0a0161' + '4c'],
  ['garbage', 'dht_rpc.Request', 'ffffffffffffffffffffff'],
  // The reference is more lenient than protobuf on these (see hyperdht/messages/__init__.py).
  ['truncated bytes field', 'dht_rpc.Request', '0a0161' + '1205aabb'],
  ['truncated command', 'dht_rpc.Request', '0a0561'],
  ['truncated fixed64 unknown field', 'dht_rpc.Request', '0a0161' + '490102'],
  ['unknown group', 'dht_rpc.Request', '0a0161' + '4b' + '4c'],
  ['field number 0', 'dht_rpc.Request', '0a0161' + '0001'],
  ['command with varint wire type', 'dht_rpc.Request', '0805'],
  ['port above uint32', 'peers.Request', '0801' + '108080808010'],
  ['type above uint32', 'peers.Request', '088180808010'],
  ['port 11-byte varint', 'peers.Request', '0801' + '10ffffffffffffffffffff01']
]

function versionOf (pkg) {
  return ref.require(pkg + '/package.json').version
}

function build () {
  return {
    comment: 'Generated by scripts/golden/make_vectors.js; do not edit. Regenerate: npm ci --prefix reference && node scripts/golden/make_vectors.js',
    reference: {
      'protocol-buffers': versionOf('protocol-buffers'),
      'protocol-buffers-schema': versionOf('protocol-buffers-schema'),
      varint: versionOf('varint'),
      'dht-rpc': versionOf('dht-rpc'),
      hyperdht: versionOf('hyperdht')
    },
    // Reference encodings; "decoded" is what the reference's decode() returns
    // for "hex" (absent bytes fields are null, absent ints 0).
    encode: ENCODE_CASES.map(([name, kind, input]) => {
      const hex = encode(kind, input)
      const dec = decode(kind, hex)
      if (!dec.ok) throw new Error(name + ': reference cannot decode its own output')
      return { name, kind, input, hex, decoded: dec.value }
    }),
    // Reference decoder behaviour on hand-made inputs: "ok" with "decoded",
    // or "error" with the reference's message.
    decode: DECODE_CASES.map(([name, kind, hex]) => {
      const dec = decode(kind, hex)
      return dec.ok
        ? { name, kind, hex, ok: true, decoded: dec.value }
        : { name, kind, hex, ok: false, error: dec.error }
    })
  }
}

function main (argv) {
  const mode = argv[0]
  if (mode === 'decode' || mode === 'encode') {
    let kind = null
    for (const arg of argv.slice(1)) {
      if (KINDS.includes(arg)) kind = arg
      else if (kind === null) lookup(ours, arg) // throws "unknown kind"
      else if (mode === 'decode') console.log(JSON.stringify(decode(kind, arg)))
      else console.log(encode(kind, JSON.parse(arg)))
    }
    return 0
  }
  const text = JSON.stringify(build(), null, 1) + '\n'
  if (mode === '--check') {
    const old = fs.existsSync(OUT) ? fs.readFileSync(OUT, 'utf-8') : ''
    if (old !== text) {
      console.error(path.relative(ROOT, OUT) + ' is out of date: run node scripts/golden/make_vectors.js')
      return 1
    }
    return 0
  }
  if (mode !== undefined) {
    console.error('usage: node make_vectors.js [--check | decode KIND HEX... | encode KIND JSON...]')
    return 2
  }
  fs.mkdirSync(path.dirname(OUT), { recursive: true })
  fs.writeFileSync(OUT, text)
  console.log('wrote ' + path.relative(ROOT, OUT) + ' (' + ENCODE_CASES.length + ' encode, ' + DECODE_CASES.length + ' decode vectors)')
  return 0
}

process.exitCode = main(process.argv.slice(2))
