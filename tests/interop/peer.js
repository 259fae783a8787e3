#!/usr/bin/env node
'use strict'
// A Node.js reference peer (hyperdht@1.3.0 on dht-rpc@2.3.0), driven over
// stdin/stdout with JSON lines. See README.md in this directory for the
// protocol. Usage:
//
//   node peer.js [--port N] [--host 127.0.0.1] [--bootstrap host:port]...
//                [--ephemeral] [--id HEX] [--capture FILE] [--let-crash]
//                [--concurrency N] ['{"port": 0, "bootstrap": [...], ...}']
//
// On start it prints {"event":"ready","port":N,"host":H,"id":HEX,...}.

process.noDeprecation = true // the reference uses new Buffer(); keep stderr clean

var dgram = require('dgram')
var ref = require('../../reference/lookup')
var hyperdht = ref.require('hyperdht')
var jsonl = require('./jsonl')
var wire = require('./wire')

var hex = wire.hex
var fromHex = wire.fromHex
var optionalHex = wire.optionalHex
var parseAddr = wire.parseAddr
var fmtAddr = wire.fmtAddr
var fmtNode = wire.fmtNode

// ---------------------------------------------------------------- options

function parseArgs (argv) {
  var opts = {
    port: 0,
    host: '127.0.0.1',
    bootstrap: [],
    ephemeral: false,
    id: null,
    capture: null,
    letCrash: false,
    concurrency: null
  }

  function merge (obj) {
    for (var k in obj) {
      if (k === 'bootstrap') opts.bootstrap = opts.bootstrap.concat(obj.bootstrap)
      else if (k === 'let_crash') opts.letCrash = !!obj[k]
      else opts[k] = obj[k]
    }
  }

  for (var i = 0; i < argv.length; i++) {
    var a = argv[i]
    var eq = a.indexOf('=')
    var inline = null
    if (a.slice(0, 2) === '--' && eq > -1) {
      inline = a.slice(eq + 1)
      a = a.slice(0, eq)
    }
    var next = function () {
      if (inline !== null) return inline
      if (i + 1 >= argv.length) throw new Error(a + ' needs a value')
      return argv[++i]
    }
    if (a[0] === '{') merge(JSON.parse(a))
    else if (a === '--port' || a === '-p') opts.port = Number(next())
    else if (a === '--host') opts.host = next()
    else if (a === '--bootstrap' || a === '-b') opts.bootstrap.push(next())
    else if (a === '--ephemeral') opts.ephemeral = true
    else if (a === '--id') opts.id = next()
    else if (a === '--capture') opts.capture = next()
    else if (a === '--let-crash') opts.letCrash = true
    else if (a === '--concurrency') opts.concurrency = Number(next())
    else throw new Error('unknown argument: ' + a)
  }

  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error('--port must be an integer 0..65535')
  }
  opts.bootstrap = opts.bootstrap.map(function (b) {
    if (typeof b === 'object' && b) return b.host + ':' + b.port
    return String(b)
  })
  if (opts.id !== null) opts.id = fromHex(opts.id, '--id', 32)
  return opts
}

var opts
try {
  opts = parseArgs(process.argv.slice(2))
} catch (err) {
  jsonl.write({ event: 'error', error: err.message })
  process.exit(2)
}

// ---------------------------------------------------------------- state

var events = [] // recorded hyperdht/dht-rpc events
var calls = [] // recorded calls of `handle` handlers
var handlers = {} // "query:cmd" -> listener
var captureLabel = null
var isReady = false

function record (ev) {
  ev.t = Date.now()
  events.push(ev)
}

if (!opts.letCrash) {
  // The reference throws from inside socket callbacks on some malformed
  // datagrams (see REFERENCE_NOTES.md). Keep the harness alive and make the
  // crash observable instead: an `events` entry and an unsolicited line.
  process.on('uncaughtException', function (err) {
    var msg = jsonl.errorMessage(err)
    record({ event: 'uncaughtException', error: msg, stack: String(err && err.stack) })
    jsonl.write({ event: 'uncaughtException', error: msg })
  })
}

// ---------------------------------------------------------------- the node

var socket = dgram.createSocket('udp4')
if (opts.capture) {
  wire.attachCapture(socket, wire.fileSink(opts.capture), function () { return captureLabel })
}
// Bind before hyperdht's nextTick bootstrap sends anything (dgram queues
// sends while binding), so the node never binds implicitly to 0.0.0.0.
socket.bind(opts.port, opts.host)

var dhtOpts = { socket: socket, ephemeral: opts.ephemeral }
if (opts.bootstrap.length) dhtOpts.bootstrap = opts.bootstrap
if (opts.id) dhtOpts.id = opts.id
if (opts.concurrency) dhtOpts.concurrency = opts.concurrency

var node = hyperdht(dhtOpts)

// udp-request re-emits EADDRINUSE/EPERM/EACCES as 'error' on its emitter,
// which nothing in the reference listens to.
node.dht.socket.on('error', function (err) {
  if (!isReady) {
    jsonl.write({ event: 'error', error: jsonl.errorMessage(err) })
    process.exit(1)
  }
  record({ event: 'socketError', error: jsonl.errorMessage(err) })
})
node.dht.socket.on('warning', function () {})
node.on('error', function (err) {
  record({ event: 'error', error: jsonl.errorMessage(err) })
})

node.on('announce', function (target, peer) {
  record({ event: 'announce', target: hex(target), peer: fmtAddr(peer) })
})
node.on('unannounce', function (target, peer) {
  record({ event: 'unannounce', target: hex(target), peer: fmtAddr(peer) })
})
node.on('lookup', function (target) {
  record({ event: 'lookup', target: hex(target) })
})
node.dht.on('holepunch', function (from, to) {
  record({ event: 'holepunch', from: fmtAddr(from), to: fmtAddr(to) })
})

socket.on('listening', function () {
  isReady = true
  var a = socket.address()
  jsonl.write({
    event: 'ready',
    host: a.address,
    port: a.port,
    id: hex(node.id),
    ephemeral: opts.ephemeral,
    bootstrap: opts.bootstrap,
    pid: process.pid
  })
})

// ---------------------------------------------------------------- helpers

function key32 (value, name) {
  return fromHex(value, name || 'key', 32)
}

function peersOpts (msg, lookup) {
  var o = {}
  if (msg.port !== undefined && msg.port !== null) {
    if (!Number.isInteger(msg.port) || msg.port < 0 || msg.port > 65535) {
      throw new Error('port must be an integer 0..65535')
    }
    o.port = msg.port
  }
  if (msg.localAddress !== undefined && msg.localAddress !== null) {
    var la = msg.localAddress
    if (lookup && la && typeof la === 'object' && la.port === undefined) {
      la = { host: la.host, port: 0 }
    }
    o.localAddress = parseAddr(la, 'localAddress')
  }
  return o
}

function fmtPeersResult (r) {
  return {
    node: fmtNode(r.node),
    peers: (r.peers || []).map(fmtAddr),
    localPeers: (r.localPeers || []).map(fmtAddr)
  }
}

function fmtRawResult (r) {
  return { node: fmtNode(r.node), value: hex(r.value) }
}

// Collect a query stream fully; reply with {results} or an error that also
// carries the results collected so far.
function collect (stream, map, done) {
  var results = []
  var finished = false
  stream.on('data', done.guard(function (data) {
    results.push(map(data))
  }))
  stream.on('error', function (err) { finish(err) })
  stream.on('end', function () { finish(null) })

  function finish (err) {
    if (finished) return
    finished = true
    done(err, { results: results })
  }
}

function queryArgs (msg) {
  if (typeof msg.command !== 'string' || !msg.command) throw new Error('command must be a string')
  var q = { command: msg.command, target: fromHex(msg.target, 'target') }
  if (!q.target.length) throw new Error('target must not be empty')
  var value = optionalHex(msg.value, 'value')
  if (value) q.value = value
  var o = {}
  if (msg.nodes) {
    if (!Array.isArray(msg.nodes)) throw new Error('nodes must be a list of {host, port, id?}')
    o.nodes = msg.nodes.map(function (n, i) { return parseAddr(n, 'nodes[' + i + ']') })
  }
  if (msg.verbose) o.verbose = true
  if (msg.holepunching === false) o.holepunching = false
  if (msg.concurrency) o.concurrency = msg.concurrency
  return { query: q, opts: o }
}

// ---------------------------------------------------------------- commands

var commands = {
  address: function (msg, done) {
    var a = socket.address()
    done(null, { host: a.address, port: a.port, id: hex(node.id), ephemeral: opts.ephemeral })
  },

  ping: function (msg, done) {
    var peer = parseAddr(msg, 'ping')
    node.ping(peer, done.guard(function (err, address, from) {
      if (err) return done(err)
      done(null, { address: fmtAddr(address), node: fmtNode(from) })
    }))
  },

  holepunch: function (msg, done) {
    var peer = parseAddr(msg.peer, 'peer')
    var referrer = parseAddr(msg.referrer, 'referrer')
    node.holepunch(peer, referrer, done.guard(function (err, res, from) {
      if (err) return done(err)
      if (!res) return done(null, { from: null, node: null, address: null }) // referrer is us
      done(null, {
        from: fmtAddr(from), // who actually answered: the peer itself when the punch worked
        node: { id: hex(res.id), host: from.host, port: from.port },
        address: wire.decodePeer(res.value) // the peer's view of our address
      })
    }))
  },

  ready: function (msg, done) {
    node.ready(done.guard(function () {
      done(null, { nodes: node.dht.toArray().length })
    }))
  },

  bootstrap: function (msg, done) {
    node.bootstrap(done.guard(function (err) {
      if (err) return done(err)
      done(null, { nodes: node.dht.toArray().length })
    }))
  },

  nodes: function (msg, done) {
    done(null, { nodes: node.dht.toArray().map(fmtNode) })
  },

  announce: function (msg, done) {
    var stream = node.announce(key32(msg.key), peersOpts(msg, false))
    collect(stream, fmtPeersResult, done)
  },

  unannounce: function (msg, done) {
    // hyperdht's unannounce() does not return its stream: use the callback.
    node.unannounce(key32(msg.key), peersOpts(msg, false), done.guard(function (err, results) {
      done(err, { results: (results || []).map(fmtRawResult) })
    }))
  },

  lookup: function (msg, done) {
    var stream = node.lookup(key32(msg.key), peersOpts(msg, true))
    collect(stream, fmtPeersResult, done)
  },

  query: function (msg, done) {
    var a = queryArgs(msg)
    collect(node.dht.query(a.query, a.opts), fmtRawResult, done)
  },

  update: function (msg, done) {
    var a = queryArgs(msg)
    collect(node.dht.update(a.query, a.opts), fmtRawResult, done)
  },

  handle: function (msg, done) {
    var kind = msg.kind
    if (kind !== 'query' && kind !== 'update') throw new Error('kind must be "query" or "update"')
    var command = msg.command
    if (typeof command !== 'string' || !command) throw new Error('command must be a string')
    if (command === 'peers') throw new Error('"peers" is handled by hyperdht itself')
    if (command === '_ping' || command === '_find_node') {
      throw new Error(command + ' is built into dht-rpc and never reaches a handler')
    }
    var reply = optionalHex(msg.reply, 'reply')
    var echo = !!msg.echo
    var drop = !!msg.drop
    var name = kind + ':' + command

    if (handlers[name]) node.dht.removeListener(name, handlers[name])
    handlers[name] = function (q, cb) {
      calls.push({
        kind: kind,
        command: q.command,
        node: { id: hex(q.node.id), host: q.node.host, port: q.node.port },
        target: hex(q.target),
        value: hex(q.value),
        roundtripToken: !!q.roundtripToken,
        t: Date.now()
      })
      if (drop) return cb(new Error('dropped')) // dht-rpc: an error means no response
      cb(null, echo ? q.value : reply)
    }
    node.dht.on(name, handlers[name])
    done(null, {})
  },

  unhandle: function (msg, done) {
    var name = msg.kind + ':' + msg.command
    var had = !!handlers[name]
    if (had) node.dht.removeListener(name, handlers[name])
    delete handlers[name]
    done(null, { removed: had })
  },

  calls: function (msg, done) {
    var list = calls.filter(function (c) {
      return (msg.command === undefined || msg.command === null || c.command === msg.command) &&
        (msg.kind === undefined || msg.kind === null || c.kind === msg.kind)
    })
    if (msg.clear) calls = calls.filter(function (c) { return list.indexOf(c) === -1 })
    done(null, { calls: list })
  },

  events: function (msg, done) {
    var list = events.filter(function (e) {
      return msg.event === undefined || msg.event === null || e.event === msg.event
    })
    if (msg.clear) events = events.filter(function (e) { return list.indexOf(e) === -1 })
    done(null, { events: list })
  },

  capture_label: function (msg, done) {
    var prev = captureLabel
    captureLabel = msg.label === undefined ? null : msg.label
    done(null, { previous: prev, capturing: !!opts.capture })
  },

  close: function (msg, done) {
    done(null, {})
    jsonl.shutdown(destroy, 0)
  }
}

function destroy () {
  try {
    node.destroy()
  } catch (err) {
    // already closed
  }
}

jsonl.serve(commands, destroy)
