#!/usr/bin/env node
'use strict'
// Print, as one JSON line, the versions of the reference packages exactly as
// hyperdht loads them (so a nested or hoisted copy of another version shows).
var path = require('path')
var ref = require('../../reference/lookup')

// The version of `name` as the module at `fromFile` would load it.
function versionFrom (name, fromFile) {
  var base = path.dirname(fromFile)
  return require(require.resolve(name + '/package.json', { paths: [base] })).version
}

var hyperdhtMain = ref.resolve('hyperdht')
var dhtRpcMain = require.resolve('dht-rpc', { paths: [path.dirname(hyperdhtMain)] })

console.log(JSON.stringify({
  node: process.version,
  modules: ref.dir,
  hyperdht: ref.require('hyperdht/package.json').version,
  'dht-rpc': versionFrom('dht-rpc', hyperdhtMain),
  'udp-request': versionFrom('udp-request', dhtRpcMain)
}))
