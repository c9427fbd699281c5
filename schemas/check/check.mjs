// Checks schemas/asyncapi.json with @asyncapi/parser, the parser AsyncAPI's own tools use
// (its Spectral rulesets and the AsyncAPI and AMQP binding JSON Schemas).
//
// Usage: node check.mjs ../asyncapi.json   (deploy/test.sh runs it after `npm ci`)
//
// Fails on any error, on any warning not listed in EXPECTED_WARNINGS, and on a document whose
// messages, channels or operations lack what the contract promises (a name, an AMQP binding).
// Prints the parser's summary either way.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Parser } from '@asyncapi/parser';

// Warnings the project cannot fix, each with the reason. Nothing is expected today: the info
// object has contact and licence, every message has its id (its key under
// components.messages in AsyncAPI 3), and every binding is one the parser knows (AMQP 0.3.0).
// An entry is { code, why }.
const EXPECTED_WARNINGS = [];

const SEVERITY = ['error', 'warning', 'info', 'hint'];

const path = process.argv[2];
if (!path) {
    console.error('usage: node check.mjs <asyncapi document>');
    process.exit(2);
}
const require = createRequire(import.meta.url);
const parserVersion = require('@asyncapi/parser/package.json').version;

const { document, diagnostics } = await new Parser().parse(readFileSync(path, 'utf8'));

const counts = { error: 0, warning: 0, info: 0, hint: 0 };
const unexpected = [];
for (const diagnostic of diagnostics) {
    const severity = SEVERITY[diagnostic.severity] ?? 'unknown';
    counts[severity] = (counts[severity] ?? 0) + 1;
    const expected =
        severity === 'warning' && EXPECTED_WARNINGS.find((entry) => entry.code === diagnostic.code);
    const where = diagnostic.path.join('/') || '(document)';
    const note = expected ? ` (expected: ${expected.why})` : '';
    console.log(`asyncapi check: ${severity} ${diagnostic.code} at ${where}: ${diagnostic.message}${note}`);
    if (severity === 'error' || (severity === 'warning' && !expected)) {
        unexpected.push(diagnostic);
    }
}

const problems = [];
if (document) {
    for (const message of document.allMessages().all()) {
        const amqp = message.bindings().get('amqp');
        for (const [what, value] of [
            ['id', message.id()],
            ['name', message.name()],
            ['title', message.title()],
            ['summary', message.summary()],
        ]) {
            if (!value) problems.push(`message ${message.id()} has no ${what}`);
        }
        if (message.contentType() !== 'application/json') {
            problems.push(`message ${message.id()} is not application/json`);
        }
        if (!amqp || amqp.value().messageType !== message.name()) {
            problems.push(`message ${message.id()} has no AMQP binding naming its type`);
        }
    }
    for (const channel of document.allChannels().all()) {
        const amqp = channel.bindings().get('amqp');
        if (!amqp || !['routingKey', 'queue'].includes(amqp.value().is)) {
            problems.push(`channel ${channel.id()} has no AMQP channel binding`);
        }
    }
    for (const operation of document.allOperations().all()) {
        const amqp = operation.bindings().get('amqp')?.value();
        if (!amqp) {
            problems.push(`operation ${operation.id()} has no AMQP operation binding`);
        } else if (operation.action() === 'send' && !(amqp.deliveryMode === 2 && amqp.mandatory === true)) {
            problems.push(`operation ${operation.id()} does not publish persistent and mandatory`);
        } else if (operation.action() === 'receive' && amqp.ack !== true) {
            problems.push(`operation ${operation.id()} does not acknowledge`);
        }
    }
} else {
    problems.push('the parser returned no document');
}
for (const problem of problems) console.log(`asyncapi check: problem: ${problem}`);

const shape = document
    ? `AsyncAPI ${document.version()}, ${document.allChannels().length} channels, ` +
      `${document.allOperations().length} operations, ${document.allMessages().length} messages`
    : 'not parsed';
const expectedWarnings = counts.warning - unexpected.filter((d) => SEVERITY[d.severity] === 'warning').length;
console.log(
    `asyncapi check: ${path}: ${shape}; @asyncapi/parser ${parserVersion}: ` +
        `${counts.error} errors, ${counts.warning} warnings (${expectedWarnings} expected), ` +
        `${counts.info} infos, ${counts.hint} hints`,
);
if (unexpected.length > 0 || problems.length > 0) {
    console.log('asyncapi check: FAILED');
    process.exit(1);
}
console.log('asyncapi check: ok');
