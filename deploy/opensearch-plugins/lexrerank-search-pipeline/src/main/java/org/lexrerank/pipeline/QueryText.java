package org.lexrerank.pipeline;

import java.io.IOException;
import java.util.List;
import java.util.Map;

import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.core.xcontent.ToXContent;
import org.opensearch.index.query.MatchBoolPrefixQueryBuilder;
import org.opensearch.index.query.MatchPhraseQueryBuilder;
import org.opensearch.index.query.MatchQueryBuilder;
import org.opensearch.index.query.MultiMatchQueryBuilder;
import org.opensearch.index.query.QueryBuilder;
import org.opensearch.index.query.QueryStringQueryBuilder;
import org.opensearch.index.query.SimpleQueryStringBuilder;
import org.opensearch.search.builder.SearchSourceBuilder;

/**
 * The query text to rerank for, found as the gateway finds it (gateway/rerank_request.py):
 * {@code ext.rerank.query_context.query_text}, else its {@code query_text_path}, else the
 * processor's {@code context.query_text_path}, else the text of a simple query ({@code match},
 * {@code match_phrase}, {@code match_bool_prefix}, {@code multi_match},
 * {@code simple_query_string}, {@code query_string}, which is also what {@code ?q=} becomes).
 *
 * <p>A path is read in the request as OpenSearch holds it: queries in their full form, so
 * {@code query.match.content} leads to {@code {"query": "...", ...}}; that object's
 * {@code query} string is taken, and the path the gateway accepts works here too.
 */
final class QueryText {

    private QueryText() {}

    /** The query text, or null when none is found; IllegalArgumentException for a path that leads nowhere. */
    static String resolve(Map<String, Object> options, String defaultPath, SearchSourceBuilder source) throws IOException {
        Object context = options.get("query_context");
        if (context instanceof Map) {
            Map<?, ?> map = (Map<?, ?>) context;
            if (map.get("query_text") instanceof String) {
                return (String) map.get("query_text");
            }
            Object path = map.get("query_text_path");
            String text = path instanceof String ? atPath(source, (String) path) : null;
            if (text == null) {
                throw new IllegalArgumentException("ext.rerank.query_context.query_text_path '" + path
                    + "' does not lead to a non-empty string in the request body");
            }
            return text;
        }
        if (defaultPath != null) {
            String text = atPath(source, defaultPath);
            if (text != null) {
                return text;
            }
        }
        return source == null ? null : inferred(source.query());
    }

    static String atPath(SearchSourceBuilder source, String path) throws IOException {
        if (source == null) {
            return null;
        }
        String json = BytesReference.bytes(source.toXContent(XContentFactory.jsonBuilder(), ToXContent.EMPTY_PARAMS))
            .utf8ToString();
        Object node = XContentHelper.convertToMap(JsonXContent.jsonXContent, json, false);
        for (String part : path.split("\\.", -1)) {
            if (node instanceof Map && ((Map<?, ?>) node).containsKey(part)) {
                node = ((Map<?, ?>) node).get(part);
            } else if (node instanceof List && part.matches("[0-9]{1,9}") && Integer.parseInt(part) < ((List<?>) node).size()) {
                node = ((List<?>) node).get(Integer.parseInt(part));
            } else {
                return null;
            }
        }
        if (node instanceof Map && ((Map<?, ?>) node).get("query") instanceof String) {
            node = ((Map<?, ?>) node).get("query");  // a query's full form
        }
        return node instanceof String && !((String) node).isBlank() ? (String) node : null;
    }

    static String inferred(QueryBuilder query) {
        Object text = null;
        if (query instanceof MatchQueryBuilder) {
            text = ((MatchQueryBuilder) query).value();
        } else if (query instanceof MatchPhraseQueryBuilder) {
            text = ((MatchPhraseQueryBuilder) query).value();
        } else if (query instanceof MatchBoolPrefixQueryBuilder) {
            text = ((MatchBoolPrefixQueryBuilder) query).value();
        } else if (query instanceof MultiMatchQueryBuilder) {
            text = ((MultiMatchQueryBuilder) query).value();
        } else if (query instanceof SimpleQueryStringBuilder) {
            text = ((SimpleQueryStringBuilder) query).value();
        } else if (query instanceof QueryStringQueryBuilder) {
            text = ((QueryStringQueryBuilder) query).queryString();
        }
        return text instanceof String && !((String) text).isBlank() ? (String) text : null;
    }
}
