'use strict'
// Wire helpers shared by peer.js and capture.js: hex/address conversions,
// datagram decoding (udp-request header + dht-rpc protobuf + hyperdht `peers`
// payload) and the socket wrapper that records every datagram in and out.

var fs = require('fs')
var path = require('path')
var ref = require('../../reference/lookup')

var dhtRpcDir = path.dirname(ref.resolve('dht-rpc/package.json'))
var hyperdhtDir = path.dirname(ref.resolve('hyperdht/package.json'))
var protobuf = require(require.resolve('protocol-buffers', { paths: [dhtRpcDir] }))
var ipv4 = require(require.resolve('ipv4-peers', { paths: [dhtRpcDir] }))

// The exact encoders the reference uses.
var rpc = ref.require('dht-rpc/messages')
var peersMessages = protobuf(fs.readFileSync(path.join(hyperdhtDir, 'schema.proto')))

function hex (buf) {
  if (buf === null || buf === undefined) return null
  return Buffer.from(buf).toString('hex')
}

function fromHex (value, name, length) {
  if (typeof value !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(value)) {
    throw new Error(name + ' must be a hex string')
  }
  var buf = Buffer.from(value, 'hex')
  if (length !== undefined && buf.length !== length) {
    throw new Error(name + ' must be ' + length + ' bytes, got ' + buf.length)
  }
  return buf
}

function optionalHex (value, name, length) {
  if (value === null || value === undefined) return null
  return fromHex(value, name, length)
}

// {host, port} | "host:port" -> {host, port}
function parseAddr (addr, name) {
  name = name || 'address'
  if (typeof addr === 'string') {
    var i = addr.lastIndexOf(':')
    if (i <= 0) throw new Error(name + ' must be "host:port"')
    addr = { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) }
  }
  if (!addr || typeof addr !== 'object') throw new Error(name + ' must be {host, port}')
  if (typeof addr.host !== 'string' || !addr.host) throw new Error(name + '.host must be a string')
  var port = addr.port
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(name + '.port must be an integer 0..65535')
  }
  var out = { host: addr.host, port: port }
  if (addr.id !== undefined && addr.id !== null) out.id = fromHex(addr.id, name + '.id', 32)
  return out
}

function fmtAddr (a) {
  if (!a) return null
  return { host: a.host, port: a.port }
}

function fmtNode (n) {
  if (!n) return null
  return { id: hex(n.id), host: n.host, port: n.port }
}

function encodePeer (addr) {
  return ipv4.encode([addr])
}

function decodePeer (buf) {
  try {
    var p = buf && ipv4.decode(buf)[0]
    return p ? { host: p.host, port: p.port } : null
  } catch (err) {
    return null
  }
}

function hexFields (msg) {
  var out = {}
  for (var k in msg) {
    var v = msg[k]
    out[k] = Buffer.isBuffer(v) ? v.toString('hex') : v
  }
  return out
}

// Decode one raw datagram the way udp-request + dht-rpc would.
function decodeDatagram (buf) {
  var out = { request: null, tid: null, message: null }
  if (buf.length < 2) {
    out.error = 'shorter than the 2-byte header'
    return out
  }
  var header = buf.readUInt16BE(0)
  out.request = !!(header & 0x8000)
  out.tid = header & 0x7fff
  try {
    var msg = (out.request ? rpc.Request : rpc.Response).decode(buf, 2)
    out.message = hexFields(msg)
    if (out.request && msg.command === 'peers' && msg.value) {
      try {
        out.peers = hexFields(peersMessages.Request.decode(msg.value))
      } catch (err) {
        out.peers = null
      }
    }
  } catch (err) {
    out.error = err.message
  }
  return out
}

// Record every datagram a dgram socket sends and receives.
// sink(obj) gets one object per datagram; label() names the current step.
function attachCapture (socket, sink, label) {
  var t0 = Date.now()
  var n = 0
  var origSend = socket.send

  function local () {
    try {
      var a = socket.address()
      return { host: a.address, port: a.port }
    } catch (err) {
      return null
    }
  }

  function record (dir, data, remote) {
    var d = decodeDatagram(data)
    var line = {
      n: n++,
      t: Date.now() - t0,
      dir: dir,
      step: label ? label() : null,
      local: local(),
      remote: remote,
      hex: data.toString('hex'),
      request: d.request,
      tid: d.tid,
      message: d.message
    }
    if (d.peers !== undefined) line.peers = d.peers
    if (d.error) line.error = d.error
    try {
      sink(line)
    } catch (err) {
      // a capture must never break the peer
    }
  }

  socket.send = function (buf, offset, length, port, host) {
    // udp-request always calls send(buf, 0, len, port, host[, cb]);
    // also accept send(buf, port, host[, cb]).
    var data = buf
    var remote
    if (typeof offset === 'number' && typeof length === 'number' && typeof port === 'number') {
      data = buf.slice(offset, offset + length)
      remote = { host: host, port: port }
    } else {
      remote = { host: length, port: offset }
    }
    record('out', Buffer.from(data), remote)
    return origSend.apply(socket, arguments)
  }

  // prepend: log an incoming datagram before udp-request reacts to it, so
  // that the file order is the causal order.
  socket.prependListener('message', function (msg, rinfo) {
    record('in', Buffer.from(msg), { host: rinfo.address, port: rinfo.port })
  })
}

// A sink that appends JSON lines to a file synchronously (survives a kill).
function fileSink (file) {
  var fd = fs.openSync(file, 'a')
  return function (obj) {
    fs.writeSync(fd, JSON.stringify(obj) + '\n')
  }
}

module.exports = {
  rpc: rpc,
  peersMessages: peersMessages,
  ipv4: ipv4,
  hex: hex,
  fromHex: fromHex,
  optionalHex: optionalHex,
  parseAddr: parseAddr,
  fmtAddr: fmtAddr,
  fmtNode: fmtNode,
  encodePeer: encodePeer,
  decodePeer: decodePeer,
  decodeDatagram: decodeDatagram,
  attachCapture: attachCapture,
  fileSink: fileSink
}
