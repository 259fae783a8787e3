#!/usr/bin/env node
'use strict'
// The Node.js reference server for benchmarks/suite.py: one dht-rpc@2.3.0
// node (the layer that answers _ping and _find_node in hyperdht@1.3.0) on
// 127.0.0.1. Prints {"port": N, "pid": P} when bound, serves until a line
// (or end of file) arrives on stdin, then prints {"table": T} (its routing
// table size) and exits. An optional argument, 64 hex digits, is the node
// id (random without it; the suite gives every server of a round the same
// one). Run with NODE_PATH pointing at the reference's node_modules (the
// suite sets it).

process.noDeprecation = true // the reference uses new Buffer()

var dgram = require('dgram')
var dht = require('dht-rpc')

var socket = dgram.createSocket('udp4')
// Bind before dht-rpc's nextTick bootstrap (it has no bootstrap nodes here).
socket.bind(0, '127.0.0.1')
var id = process.argv[2]
if (id !== undefined && !/^[0-9a-f]{64}$/.test(id)) {
  process.stderr.write('usage: serve.js [ID: 64 hex digits]\n')
  process.exit(2)
}
var node = dht({ socket: socket, id: id === undefined ? undefined : Buffer.from(id, 'hex') })
node.on('error', function () {})
node.socket.on('warning', function () {})

function say (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

socket.on('listening', function () {
  say({ port: socket.address().port, pid: process.pid })
})

var stopped = false
function stop () {
  if (stopped) return
  stopped = true
  say({ table: node.nodes.count() })
  process.exit(0)
}
process.stdin.on('data', stop)
process.stdin.on('end', stop)
