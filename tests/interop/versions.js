#!/usr/bin/env node
'use strict'
// Print, as one JSON line, the versions of the reference packages exactly as
// hyperdht loads them (so a nested or hoisted copy of another version shows).
var path = require('path')

function versionFrom (name, fromModule) {
  var base = path.dirname(require.resolve(fromModule))
  return require(require.resolve(name + '/package.json', { paths: [base] })).version
}

console.log(JSON.stringify({
  node: process.version,
  hyperdht: require('hyperdht/package.json').version,
  'dht-rpc': versionFrom('dht-rpc', 'hyperdht'),
  'udp-request': versionFrom('udp-request', require.resolve('dht-rpc', {
    paths: [path.dirname(require.resolve('hyperdht'))]
  }))
}))
