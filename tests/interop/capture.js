#!/usr/bin/env node
'use strict'
// Golden wire captures from the Node.js reference.
//
// Client mode: a fresh hyperdht node (no bootstrap) performs one exchange of
// each kind against --target and appends every datagram it sends and receives
// to --out as JSON lines (see README.md for the line format):
//
//   node capture.js --target HOST:PORT --out FILE [--steps ping,find_node,...]
//       [--command echo] [--value HEX] [--key HEX] [--via HOST:PORT]
//       [--announce-port N] [--local-address HOST:PORT]
//       [--id HEX] [--ephemeral] [--host 127.0.0.1] [--port 0]
//
//   Steps (default: all, in this order):
//     ping        _ping
//     find_node   _find_node for --key
//     query       custom query --command/--key/--value (a query: no token)
//     update      the same as an update: a query, then the commit with the token
//     holepunch   _ping with forwardRequest=--via sent to the target, which
//                 forwards it; --via defaults to this client itself, so the
//                 forwarded request and the direct answer are captured too
//     announce    hyperdht `peers` type 1 (verbose update)
//     lookup      hyperdht `peers` type 0 (query)
//     unannounce  hyperdht `peers` type 2 (update)
//   stdout: one {"event":"step",...} line per step, then {"event":"done",...};
//   exit status 0 when every step succeeded, else 1.
//
// Proxy mode: a UDP proxy in front of --upstream that records everything that
// passes through (each client gets its own upstream-facing socket):
//
//   node capture.js --proxy --upstream HOST:PORT --out FILE [--host H] [--port N]
//
//   prints {"event":"ready","host":H,"port":N} and serves the JSON-lines
//   commands `stats` and `close`; exits when stdin closes.
//
// Decode mode: decode datagrams with the reference's own decoders (dht-rpc's
// messages.js, hyperdht's schema.proto), e.g. replies from the Python node:
//
//   node capture.js --decode < datagrams.txt     (one hex datagram per line)
//
//   prints one JSON line per input line: {request, tid, message, peers?,
//   peersResponse?, error?} as in the capture format; `peersResponse` is the
//   hyperdht Response decode of a response's `value` (null if it does not
//   decode, absent when there is no value).

process.noDeprecation = true

var crypto = require('crypto')
var dgram = require('dgram')
var ref = require('../../reference/lookup')
var hyperdht = ref.require('hyperdht')
var jsonl = require('./jsonl')
var wire = require('./wire')

var hex = wire.hex

var ALL_STEPS = ['ping', 'find_node', 'query', 'update', 'holepunch', 'announce', 'lookup', 'unannounce']

function parseArgs (argv) {
  var o = {
    proxy: false,
    decode: false,
    target: null,
    upstream: null,
    out: null,
    steps: ALL_STEPS.slice(),
    command: 'echo',
    value: 'cafebabe',
    key: crypto.createHash('sha256').update('hyperdht interop capture').digest('hex'),
    via: null,
    announcePort: 0,
    localAddress: null,
    id: null,
    ephemeral: false,
    host: '127.0.0.1',
    port: 0
  }
  for (var i = 0; i < argv.length; i++) {
    var a = argv[i]
    var inline = null
    var eq = a.indexOf('=')
    if (a.slice(0, 2) === '--' && eq > -1) {
      inline = a.slice(eq + 1)
      a = a.slice(0, eq)
    }
    var next = function () {
      if (inline !== null) return inline
      if (i + 1 >= argv.length) throw new Error(a + ' needs a value')
      return argv[++i]
    }
    if (a === '--proxy') o.proxy = true
    else if (a === '--decode') o.decode = true
    else if (a === '--target') o.target = wire.parseAddr(next(), '--target')
    else if (a === '--upstream') o.upstream = wire.parseAddr(next(), '--upstream')
    else if (a === '--out') o.out = next()
    else if (a === '--steps') o.steps = next().split(',').filter(Boolean)
    else if (a === '--command') o.command = next()
    else if (a === '--value') o.value = next()
    else if (a === '--key') o.key = next()
    else if (a === '--via') o.via = wire.parseAddr(next(), '--via')
    else if (a === '--announce-port') o.announcePort = Number(next())
    else if (a === '--local-address') o.localAddress = wire.parseAddr(next(), '--local-address')
    else if (a === '--id') o.id = wire.fromHex(next(), '--id', 32)
    else if (a === '--ephemeral') o.ephemeral = true
    else if (a === '--host') o.host = next()
    else if (a === '--port') o.port = Number(next())
    else throw new Error('unknown argument: ' + a)
  }
  if (o.decode) return o
  if (!o.out) throw new Error('--out FILE is required')
  if (o.proxy && !o.upstream) throw new Error('--proxy needs --upstream HOST:PORT')
  if (!o.proxy && !o.target) throw new Error('--target HOST:PORT is required')
  o.steps.forEach(function (s) {
    if (ALL_STEPS.indexOf(s) === -1) throw new Error('unknown step: ' + s)
  })
  o.key = wire.fromHex(o.key, '--key', 32)
  o.value = wire.fromHex(o.value, '--value')
  return o
}

var opts
try {
  opts = parseArgs(process.argv.slice(2))
} catch (err) {
  jsonl.write({ event: 'error', error: err.message })
  process.exit(2)
}

if (opts.decode) runDecode()
else if (opts.proxy) runProxy(opts)
else runClient(opts)

// ---------------------------------------------------------------- decode

function runDecode () {
  var rl = require('readline').createInterface({ input: process.stdin, terminal: false })
  rl.on('line', function (line) {
    line = line.trim()
    if (!line) return
    var d
    try {
      d = wire.decodeDatagram(wire.fromHex(line, 'datagram'))
    } catch (err) {
      d = { request: null, tid: null, message: null, error: err.message }
    }
    if (d.request === false && d.message && d.message.value !== null && d.message.value !== undefined) {
      try {
        var res = wire.peersMessages.Response.decode(Buffer.from(d.message.value, 'hex'))
        d.peersResponse = { peers: hex(res.peers), localPeers: hex(res.localPeers) }
      } catch (err) {
        d.peersResponse = null
      }
    }
    jsonl.write(d)
  })
}

// ---------------------------------------------------------------- client

function runClient (o) {
  var step = null
  var socket = dgram.createSocket('udp4')
  var sink = wire.fileSink(o.out)
  var count = 0
  wire.attachCapture(socket, function (line) {
    count++
    sink(line)
  }, function () { return step })
  socket.bind(o.port, o.host)

  var dhtOpts = { socket: socket, ephemeral: o.ephemeral }
  if (o.id) dhtOpts.id = o.id
  var node = hyperdht(dhtOpts)
  node.dht.socket.on('error', function (err) {
    jsonl.write({ event: 'error', error: err.message })
    process.exit(1)
  })

  var target = o.target
  var nodes = [target]
  var allOk = true

  function peersValue (type, port) {
    return wire.peersMessages.Request.encode({
      type: type,
      port: port || 0,
      localAddress: o.localAddress ? wire.encodePeer(o.localAddress) : undefined
    })
  }

  function decodePeersResponse (value) {
    if (!value) return null
    try {
      var res = wire.peersMessages.Response.decode(value)
      return {
        peers: res.peers ? wire.ipv4.decode(res.peers) : [],
        localPeers: hex(res.localPeers)
      }
    } catch (err) {
      return { error: err.message }
    }
  }

  function collect (stream, cb) {
    var results = []
    var finished = false
    stream.on('data', function (d) {
      results.push({ node: wire.fmtNode(d.node), value: hex(d.value), peers: undefined })
    })
    stream.on('error', function (err) { finish(err) })
    stream.on('end', function () { finish(null) })
    function finish (err) {
      if (finished) return
      finished = true
      cb(err, { results: results })
    }
  }

  function withPeers (cb) {
    return function (err, res) {
      if (res) {
        res.results.forEach(function (r) {
          r.peers = decodePeersResponse(r.value && Buffer.from(r.value, 'hex'))
        })
      }
      cb(err, res)
    }
  }

  var impl = {
    ping: function (cb) {
      node.ping(target, function (err, address, from) {
        cb(err, err ? null : { address: address, node: wire.fmtNode(from) })
      })
    },
    find_node: function (cb) {
      collect(node.dht.query({ command: '_find_node', target: o.key }, { nodes: nodes }), cb)
    },
    query: function (cb) {
      collect(node.dht.query({ command: o.command, target: o.key, value: o.value }, { nodes: nodes }), cb)
    },
    update: function (cb) {
      collect(node.dht.update({ command: o.command, target: o.key, value: o.value }, { nodes: nodes }), cb)
    },
    holepunch: function (cb) {
      var a = socket.address()
      var via = o.via || { host: o.host === '0.0.0.0' ? '127.0.0.1' : a.address, port: a.port }
      node.dht.holepunch(via, target, function (err, res, from) {
        cb(err, err ? null : { via: via, from: wire.fmtAddr(from), address: wire.decodePeer(res.value) })
      })
    },
    announce: function (cb) {
      var q = { command: 'peers', target: o.key, value: peersValue(1, o.announcePort) }
      collect(node.dht.update(q, { nodes: nodes, verbose: true }), withPeers(cb))
    },
    lookup: function (cb) {
      var q = { command: 'peers', target: o.key, value: peersValue(0, 0) }
      collect(node.dht.query(q, { nodes: nodes }), withPeers(cb))
    },
    unannounce: function (cb) {
      var q = { command: 'peers', target: o.key, value: peersValue(2, o.announcePort) }
      collect(node.dht.update(q, { nodes: nodes }), cb)
    }
  }

  socket.on('listening', function () {
    var i = 0
    next()

    function next () {
      if (i >= o.steps.length) return finish()
      step = o.steps[i++]
      var name = step
      var t0 = Date.now()
      var called = false
      try {
        impl[name](after)
      } catch (err) {
        after(err)
      }
      function after (err, result) {
        if (called) return
        called = true
        if (err) allOk = false
        var line = { event: 'step', step: name, ok: !err, ms: Date.now() - t0 }
        if (err) line.error = err.message
        if (result) line.result = result
        jsonl.write(line)
        // let any straggler of this exchange land before the next step
        setImmediate(next)
      }
    }

    function finish () {
      step = null
      var a = socket.address()
      jsonl.write({
        event: 'done',
        ok: allOk,
        datagrams: count,
        out: o.out,
        host: a.address,
        port: a.port,
        id: hex(node.id),
        target: target
      })
      node.destroy()
      setImmediate(function () { process.exit(allOk ? 0 : 1) })
    }
  })
}

// ---------------------------------------------------------------- proxy

function runProxy (o) {
  var sink = wire.fileSink(o.out)
  var upstream = o.upstream
  var front = dgram.createSocket('udp4')
  var clients = new Map()
  var t0 = Date.now()
  var n = 0

  function log (dir, msg, client, via, remote) {
    var d = wire.decodeDatagram(msg)
    var line = {
      n: n++,
      t: Date.now() - t0,
      dir: dir,
      client: client.addr,
      via: via,
      remote: remote,
      hex: msg.toString('hex'),
      request: d.request,
      tid: d.tid,
      message: d.message
    }
    if (d.peers !== undefined) line.peers = d.peers
    if (d.error) line.error = d.error
    sink(line)
  }

  front.on('message', function (msg, rinfo) {
    var k = rinfo.address + ':' + rinfo.port
    var c = clients.get(k)
    if (!c) {
      c = {
        addr: { host: rinfo.address, port: rinfo.port },
        sock: dgram.createSocket('udp4'),
        via: null,
        queue: []
      }
      c.sock.on('message', function (m, r) {
        log('to_client', m, c, c.via, { host: r.address, port: r.port })
        front.send(m, c.addr.port, c.addr.host)
      })
      c.sock.on('listening', function () {
        var a = c.sock.address()
        c.via = { host: a.address, port: a.port }
        var q = c.queue
        c.queue = null
        q.forEach(toUpstream.bind(null, c))
      })
      c.sock.on('error', function () {})
      c.sock.bind(0, o.host)
      clients.set(k, c)
    }
    if (c.queue) c.queue.push(msg) // until its upstream-facing socket is bound
    else toUpstream(c, msg)
  })

  function toUpstream (c, msg) {
    log('to_upstream', msg, c, c.via, upstream)
    c.sock.send(msg, upstream.port, upstream.host)
  }
  front.on('error', function (err) {
    jsonl.write({ event: 'error', error: err.message })
    process.exit(1)
  })
  front.on('listening', function () {
    var a = front.address()
    jsonl.write({ event: 'ready', host: a.address, port: a.port, upstream: upstream, pid: process.pid })
  })
  front.bind(o.port, o.host)

  function close () {
    try { front.close() } catch (err) {}
    clients.forEach(function (c) {
      try { c.sock.close() } catch (err) {}
    })
  }

  jsonl.serve({
    stats: function (msg, done) {
      var list = []
      clients.forEach(function (c) { list.push({ client: c.addr, via: c.via }) })
      done(null, { datagrams: n, clients: list })
    },
    close: function (msg, done) {
      done(null, {})
      jsonl.shutdown(close, 0)
    }
  }, close)
}
