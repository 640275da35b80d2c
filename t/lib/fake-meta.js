#!/usr/bin/env node
// t/lib/fake-meta.js: a local stand-in for Meta's Graph API media lookup
// and its file server (lookaside.fbsbx.com), for the media suites.
//
//   node t/lib/fake-meta.js [--port N]      prints "PORT <n>" once listening
//
// It answers as Meta does (META-WEBHOOKS.md section 6):
//   GET /<version>/<media id>      Authorization: Bearer <token> ->
//       {"messaging_product":"whatsapp","url":...,"mime_type":...,
//        "sha256":"<hex>","file_size":...,"id":...}
//       wrong or no token: 401, OAuthException code 190;
//       unknown id: 400, GraphMethodException code 100, subcode 33
//   GET /whatsapp_business/attachments/?mid=<id>&ext=<unix>&hash=<h>
//       the bytes with the same bearer token; 401 without it; 404 once the
//       URL is past its "ext" (5 minutes, like Meta's)
//
// Tests register files and their misbehaviour through /_fake/ (no auth):
//   POST /_fake/media {id, mime, size | data (base64), token, ...options}
//        -> {id, url, sha256, size}; options:
//      lookup_fail: [status, ...]  the next lookups answer these (500 ...)
//      lookup_stall: true          lookups never answer
//      gone: true                  the lookup answers 404 (media deleted)
//      file_fail: [status, ...]    the next file GETs answer these
//      url_expired: n              the next n file GETs answer 404
//      slow: bytes per second      the body trickles
//      stall: true                 headers and 1 KiB, then nothing
//      truncate: true              Content-Length of the whole, half sent
//      chunked: true               no Content-Length
//      bad_sha: true               the lookup's sha256 is not the file's
//      size_string: true           file_size as a string (the docs' form)
//      no_mime: true               the lookup has no mime_type
//      shared: true                random bytes shared by every file of
//                                  this size (benchmarks: 200 x 5 MB)
//   GET  /_fake/bytes/<id>          the file's bytes
//   GET  /_fake/counts              {"lookup:<id>": n, "file:<id>": n,
//                                    "unauthorized": n}
//   GET  /_fake/seen               Authorization headers seen (tests check
//                                   the token was sent)
'use strict';

const http = require('http');
const crypto = require('crypto');

const media = new Map();
const counts = {};
const seen = [];
const held = new Set();
let port = 0;

for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i] === '--port') {
        port = Number(process.argv[++i]);
    }
}

function count(key) {
    counts[key] = (counts[key] || 0) + 1;
}

function fbtrace() {
    return crypto.randomBytes(8).toString('base64').replace(/[+/=]/g, 'A');
}

function sendJson(res, status, obj) {
    const body = Buffer.from(JSON.stringify(obj));
    const headers = { 'Content-Type': 'application/json; charset=UTF-8',
                      'Content-Length': body.length };
    if (status === 401) {
        headers['WWW-Authenticate'] = 'OAuth "Facebook Platform" '
            + '"invalid_token" "Invalid OAuth access token"';
    }
    res.writeHead(status, headers);
    res.end(body);
}

function graphError(res, status, message, type, code, subcode) {
    const error = { message, type, code, fbtrace_id: fbtrace() };
    if (subcode !== undefined) {
        error.error_subcode = subcode;
    }
    if (status >= 500) {
        error.is_transient = true;
    }
    sendJson(res, status, { error });
}

function authorized(req, m) {
    const auth = req.headers.authorization || '';
    seen.push(auth);
    return m && auth === 'Bearer ' + m.token;
}

function fileUrl(m) {
    const ext = Math.floor(Date.now() / 1000) + 300;
    const hash = crypto.randomBytes(6).toString('hex');
    return `http://127.0.0.1:${port}/whatsapp_business/attachments/`
        + `?mid=${encodeURIComponent(m.id)}&ext=${ext}&hash=${hash}`;
}

const sharedData = new Map();

function register(spec) {
    let data;
    const size = Number(spec.size || 1024);
    if (spec.data !== undefined) {
        data = Buffer.from(spec.data, 'base64');
    } else if (spec.shared) {
        if (!sharedData.has(size)) {
            sharedData.set(size, crypto.randomBytes(size));
        }
        data = sharedData.get(size);
    } else {
        data = crypto.randomBytes(size);
    }
    const m = Object.assign({
        mime: 'image/jpeg', token: 'test-token',
        lookup_fail: [], file_fail: [], url_expired: 0,
    }, spec, { data });
    m.sha256 = crypto.createHash('sha256').update(data).digest('hex');
    media.set(m.id, m);
    return { id: m.id, url: fileUrl(m), sha256: m.sha256,
             sha256_b64: Buffer.from(m.sha256, 'hex').toString('base64'),
             size: data.length };
}

function lookup(req, res, id) {
    const m = media.get(id);
    count('lookup:' + id);
    if (!authorized(req, m) && !(m === undefined && req.headers.authorization)) {
        count('unauthorized');
        return graphError(res, 401, 'Invalid OAuth access token - Cannot '
                          + 'parse access token', 'OAuthException', 190);
    }
    if (m === undefined) {
        return graphError(res, 400, `Unsupported get request. Object with ID `
            + `'${id}' does not exist, cannot be loaded due to missing `
            + `permissions, or does not support this operation. Please read `
            + `the Graph API documentation at `
            + `https://developers.facebook.com/docs/graph-api`,
            'GraphMethodException', 100, 33);
    }
    if (m.lookup_stall) {
        held.add(res.socket);
        return;
    }
    if (m.lookup_fail.length) {
        return graphError(res, m.lookup_fail.shift(), 'An unexpected error '
                          + 'has occurred. Please retry your request later.',
                          'OAuthException', 2);
    }
    if (m.gone) {
        return graphError(res, 404, 'Media not found', 'OAuthException', 100);
    }
    const sha = m.bad_sha
        ? crypto.createHash('sha256').update('not the file').digest('hex')
        : m.sha256;
    const body = { messaging_product: 'whatsapp', url: fileUrl(m),
                   sha256: sha,
                   file_size: m.size_string ? String(m.data.length)
                                            : m.data.length,
                   id: m.id };
    if (!m.no_mime) {
        body.mime_type = m.mime;
    }
    sendJson(res, 200, body);
}

function file(req, res, url) {
    const id = url.searchParams.get('mid');
    const m = media.get(id);
    count('file:' + id);
    if (!authorized(req, m)) {
        count('unauthorized');
        res.writeHead(m ? 401 : 404, { 'Content-Length': 0 });
        return res.end();
    }
    const ext = Number(url.searchParams.get('ext'));
    if (m.url_expired > 0 || !(ext * 1000 > Date.now())) {
        if (m.url_expired > 0) {
            m.url_expired--;
        }
        res.writeHead(404, { 'Content-Length': 0 });
        return res.end();
    }
    if (m.file_fail.length) {
        const body = Buffer.from('Service Unavailable');
        res.writeHead(m.file_fail.shift(), { 'Content-Length': body.length });
        return res.end(body);
    }

    const headers = { 'Content-Type': m.mime };
    if (!m.chunked) {
        headers['Content-Length'] = m.data.length;
    }
    res.writeHead(200, headers);

    if (m.stall) {
        res.write(m.data.subarray(0, 1024));
        held.add(res.socket);
        return;
    }
    if (m.truncate) {
        res.write(m.data.subarray(0, m.data.length >> 1),
                  () => res.socket.destroy());
        return;
    }
    if (m.slow) {
        let off = 0;
        const step = Math.max(1, Math.floor(m.slow / 10));
        const timer = setInterval(() => {
            if (res.destroyed || off >= m.data.length) {
                clearInterval(timer);
                return res.end();
            }
            res.write(m.data.subarray(off, off + step));
            off += step;
        }, 100);
        res.on('close', () => clearInterval(timer));
        return;
    }
    res.end(m.data);
}

function control(req, res, url, body) {
    const p = url.pathname;
    if (req.method === 'POST' && p === '/_fake/media') {
        const spec = JSON.parse(body.toString() || '{}');
        const list = Array.isArray(spec) ? spec : [spec];
        const out = list.map(register);
        return sendJson(res, 200, Array.isArray(spec) ? out : out[0]);
    }
    if (p.startsWith('/_fake/bytes/')) {
        const m = media.get(decodeURIComponent(p.slice(13)));
        if (!m) {
            res.writeHead(404, { 'Content-Length': 0 });
            return res.end();
        }
        res.writeHead(200, { 'Content-Type': 'application/octet-stream',
                             'Content-Length': m.data.length });
        return res.end(m.data);
    }
    if (p === '/_fake/counts') {
        return sendJson(res, 200, counts);
    }
    if (p === '/_fake/seen') {
        return sendJson(res, 200, seen);
    }
    if (p === '/_fake/release') {
        for (const s of held) {
            s.destroy();
        }
        held.clear();
        return sendJson(res, 200, {});
    }
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
}

const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        const url = new URL(req.url, 'http://127.0.0.1');
        const body = Buffer.concat(chunks);
        try {
            if (url.pathname.startsWith('/_fake/')) {
                return control(req, res, url, body);
            }
            if (req.method !== 'GET') {
                res.writeHead(405, { 'Content-Length': 0 });
                return res.end();
            }
            if (url.pathname === '/whatsapp_business/attachments/') {
                return file(req, res, url);
            }
            const g = url.pathname.match(/^\/v\d+\.\d+\/([^/]+)$/);
            if (g) {
                return lookup(req, res, decodeURIComponent(g[1]));
            }
            graphError(res, 400, 'Unknown path components: ' + url.pathname,
                       'OAuthException', 2500);
        } catch (e) {
            sendJson(res, 500, { error: { message: String(e) } });
        }
    });
});

server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => {
    port = server.address().port;
    process.stdout.write(`PORT ${port}\n`);
});

process.on('SIGTERM', () => process.exit(0));
