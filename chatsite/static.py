"""WhiteNoise's middleware, able to run in Django's asynchronous chain.

WhiteNoise's own middleware is synchronous only. Under ASGI, Django then runs
it, and every middleware outside it, in a thread, and hands the rest of the
chain back to the event loop (async_to_sync) from there: each request hopped
loop, thread, loop, thread (the view), loop. Besides the hops, a thread
waiting for the loop never returns once the loop has stopped, and Python's
exit waited for it (chatsite.serve). Here the lookup of a path, a dict's in
production, runs on the loop; serving a file (opening and reading it) runs in
a thread; everything else goes on down the chain as a coroutine.
"""

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from chatsite.middleware import BothModesMiddleware


class StaticFilesMiddleware(BothModesMiddleware, WhiteNoiseMiddleware):
    def __init__(self, get_response) -> None:
        WhiteNoiseMiddleware.__init__(self, get_response)  # finds the files
        BothModesMiddleware.__init__(self, get_response)

    call = WhiteNoiseMiddleware.__call__

    async def acall(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # DEBUG: looks on disk
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(
                request.path_info
            )
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)
