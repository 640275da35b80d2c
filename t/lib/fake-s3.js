#!/usr/bin/env node
// t/lib/fake-s3.js: a local S3-compatible server for the media suites:
// s3rver (npm, installed by t/lib/MCMedia.pm under build/npm, never
// committed) with AWS Signature Version 4 checked on every request.
//
//   node t/lib/fake-s3.js --dir D --bucket B --key AKID --secret S
//        [--region R] [--port N]          prints "PORT <n>" once listening
//
// s3rver 3.x accepts any SigV4 signature of a known key id ("Signature
// version 4 calculation is unimplemented"), so a middleware in front of it
// recomputes the signature from the request (canonical request, string to
// sign, signing key) and answers 403 SignatureDoesNotMatch on a mismatch;
// it also refuses a payload hash that is not the body's, and a request
// whose x-amz-date is more than 15 minutes off.  Counts of refused
// requests: GET /_fake/refused.
'use strict';

const crypto = require('crypto');
const path = require('path');
const { Transform } = require('stream');

const opt = { region: 'us-east-1', port: 0 };
for (let i = 2; i < process.argv.length; i += 2) {
    opt[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
const npmDir = process.env.MC_NPM_DIR
    || path.join(__dirname, '..', '..', 'build', 'npm');
const S3rver = require(path.join(npmDir, 'node_modules', 's3rver'));
const AWSAccount = require(path.join(npmDir, 'node_modules', 's3rver', 'lib',
                                     'models', 'account'));

AWSAccount.DUMMY_ACCOUNT.createKeyPair(opt.key, opt.secret);
let refused = 0;

function hmac(key, data) {
    return crypto.createHmac('sha256', key).update(data).digest();
}

function sha256hex(data) {
    return crypto.createHash('sha256').update(data).digest('hex');
}

// RFC 3986 unreserved characters stay, everything else is %XX
function awsEncode(s) {
    return encodeURIComponent(s).replace(/[!'()*]/g,
        (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

function canonicalQuery(search) {
    const pairs = [];
    for (const [k, v] of new URLSearchParams(search)) {
        pairs.push([awsEncode(k), awsEncode(v)]);
    }
    pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1
                          : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    return pairs.map((p) => p[0] + '=' + p[1]).join('&');
}

function refuse(ctx, code, message) {
    refused++;
    ctx.status = 403;
    ctx.type = 'application/xml';
    ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + code
        + '</Code><Message>' + message + '</Message></Error>';
}

async function verify(ctx, next) {
    if (ctx.path === '/_fake/refused') {
        ctx.body = { refused };
        return;
    }
    const auth = ctx.get('authorization');
    const m = auth.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/);
    if (!m) {
        return refuse(ctx, 'AccessDenied', 'SigV4 Authorization required');
    }
    const [, akid, day, region, signed, signature] = m;
    if (akid !== opt.key || region !== opt.region) {
        return refuse(ctx, 'InvalidAccessKeyId', 'unknown key or region');
    }
    const amzDate = ctx.get('x-amz-date');
    const t = Date.parse(amzDate.replace(
        /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'));
    if (!(Math.abs(Date.now() - t) < 15 * 60 * 1000)
        || amzDate.slice(0, 8) !== day) {
        return refuse(ctx, 'RequestTimeTooSkewed', 'x-amz-date');
    }
    const payloadHash = ctx.get('x-amz-content-sha256');
    if (!payloadHash) {
        return refuse(ctx, 'InvalidRequest', 'x-amz-content-sha256 missing');
    }

    const names = signed.split(';');
    if (!names.includes('host') || !names.includes('x-amz-date')) {
        return refuse(ctx, 'AccessDenied', 'host and x-amz-date must be signed');
    }
    const headers = names.map((n) => n + ':'
        + String(ctx.get(n)).trim().replace(/\s+/g, ' ') + '\n').join('');
    const raw = ctx.req.url;
    const q = raw.indexOf('?');
    const canonical = [ctx.method, q < 0 ? raw : raw.slice(0, q),
                       canonicalQuery(q < 0 ? '' : raw.slice(q + 1)),
                       headers, signed, payloadHash].join('\n');
    const scope = `${day}/${region}/s3/aws4_request`;
    const toSign = ['AWS4-HMAC-SHA256', amzDate, scope,
                    sha256hex(canonical)].join('\n');
    let key = hmac('AWS4' + opt.secret, day);
    key = hmac(key, region);
    key = hmac(key, 's3');
    key = hmac(key, 'aws4_request');
    const want = hmac(key, toSign).toString('hex');
    if (want !== signature) {
        return refuse(ctx, 'SignatureDoesNotMatch',
                      'The request signature we calculated does not match');
    }

    // the payload hash, when signed, must be the body's: hash the stream
    // on its way to s3rver, and fail the request if it differs
    let h = null;
    if (payloadHash !== 'UNSIGNED-PAYLOAD' && ctx.method === 'PUT') {
        h = crypto.createHash('sha256');
        const tap = new Transform({
            transform(chunk, enc, cb) {
                h.update(chunk);
                cb(null, chunk);
            },
        });
        ctx.req.pipe(tap);
        ctx.req = tap;
    }
    await next();
    if (h && h.digest('hex') !== payloadHash) {
        refuse(ctx, 'XAmzContentSHA256Mismatch', 'payload hash');
    }
}

const server = new S3rver({
    address: '127.0.0.1',
    port: Number(opt.port),
    directory: opt.dir,
    silent: true,
    vhostBuckets: false,
    configureBuckets: [{ name: opt.bucket, configs: [] }],
});
server.middleware.unshift(verify);

server.run().then(({ port }) => {
    process.stdout.write(`PORT ${port}\n`);
});

process.on('SIGTERM', () => process.exit(0));
