/**
 * A response's headers as one flat list of names and values, as `writeHead` takes them:
 * appending costs nothing per header, where Fastify's reply map lower-cases, checks and
 * copies each one. Names are written lower-case by Lethe itself.
 */
export type ResponseHeaders = (string | number)[];
