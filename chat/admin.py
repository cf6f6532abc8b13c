from django.contrib import admin
from django.db.models import Count

from chat.models import Membership, Message, Room


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["joined_at"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_private", "member_count", "created_by", "created_at"]
    list_filter = ["is_private", "created_at"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["created_by"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("created_by")
            .annotate(member_count=Count("memberships"))
        )

    @admin.display(ordering="member_count", description="members")
    def member_count(self, room: Room) -> int:
        return room.member_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "room", "role", "joined_at"]
    list_filter = ["role", "room"]
    search_fields = ["user__username", "room__name", "room__slug"]
    list_select_related = ["user", "room"]
    autocomplete_fields = ["user", "room"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "user", "excerpt", "created_at"]
    list_filter = ["room", "created_at"]
    search_fields = ["body", "user__username", "room__slug"]
    list_select_related = ["user", "room"]
    autocomplete_fields = ["user", "room"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at"]

    @admin.display(description="message")
    def excerpt(self, message: Message) -> str:
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"
