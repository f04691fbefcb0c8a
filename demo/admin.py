from django.contrib import admin

from demo.models import Order, Service


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "status", "updated_at")
    list_filter = ("status",)
    list_editable = ("status",)
    search_fields = ("name", "slug", "note")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("pk", "item", "owner", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("item", "owner__username")
    raw_id_fields = ("owner",)
